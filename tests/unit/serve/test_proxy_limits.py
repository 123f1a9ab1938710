"""The gates' limits reach HAProxy, and HAProxy refuses beyond them itself: a real HAProxy (the binary Ray Serve
ships) in front of a slow HTTP server, its runtime API driven by :class:`ProxyLimits`."""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mmrag.compat.ray_haproxy import overloaded_response
from mmrag.serve.admission import Gate
from mmrag.serve.proxy_limits import ProxyLimits, runtime_command, safe_name, server_limits

pytestmark = pytest.mark.unit

SERVER = safe_name("SERVE_REPLICA::app#Gateway#ab12")
SERVICE_S = 0.4


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(SERVICE_S)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory):  # type: ignore[no-untyped-def]
    from ray.serve._private.haproxy import get_haproxy_binary

    tmp = tmp_path_factory.mktemp("haproxy")
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    err = tmp / "503.http"
    err.write_bytes(overloaded_response())
    front, sock = _port(), tmp / "admin.sock"
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{front}
    use_backend http-app-mmrag-search if {{ path /v1/search }}
    default_backend http-app
backend http-app
    server {SERVER} 127.0.0.1:{backend.server_address[1]}
backend http-app-mmrag-search
    timeout queue 20ms
    errorfile 503 {err}
    server {SERVER} 127.0.0.1:{backend.server_address[1]}
backend http-app-mmrag-generate
    server {SERVER} 127.0.0.1:{backend.server_address[1]}
"""
    )
    proc = subprocess.Popen([get_haproxy_binary(), "-f", str(cfg)], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while not sock.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert sock.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no admin socket"
    yield f"http://127.0.0.1:{front}", str(sock)
    proc.terminate()
    proc.wait(5)
    backend.shutdown()


def _get(url: str) -> tuple[int, float, dict[str, str], bytes]:
    """status, seconds, headers (names lower-cased: HAProxy sends them so), body"""
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, headers, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    return status, time.perf_counter() - t0, {k.lower(): v for k, v in headers.items()}, body


def test_server_limits_reads_this_servers_group_backends_only() -> None:
    stat = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot\n"
        f"http-app,{SERVER},0,0,0,0,,0\n"
        f"http-app-mmrag-search,{SERVER},0,0,0,0,12,0\n"
        f"http-app-mmrag-generate,{SERVER},0,0,0,0,,0\n"
        "http-app-mmrag-search,SERVE_REPLICA_app-Gateway-other,0,0,0,0,7,0\n"
        "http-app-mmrag-search,BACKEND,0,0,0,0,410,0\n"
    )
    assert server_limits(stat, SERVER) == {
        ("http-app-mmrag-search", "search"): "12",
        ("http-app-mmrag-generate", "generate"): "",
    }
    assert safe_name("SERVE_REPLICA::app#Gateway#ab12") == "SERVE_REPLICA_app-Gateway-ab12"


def test_limits_are_set_once_and_followed(haproxy) -> None:  # type: ignore[no-untyped-def]
    _, sock = haproxy
    search, generate = Gate("search", slo_s=1, initial=2), Gate("generate", slo_s=30, initial=9)
    limits = ProxyLimits({"/v1/search": search, "/v1/answer": generate}, SERVER, path=sock)
    assert limits.sync() == 2
    current = server_limits(runtime_command(sock, "show stat"), SERVER)
    assert current == {("http-app-mmrag-search", "search"): "2", ("http-app-mmrag-generate", "generate"): "9"}
    assert limits.sync() == 0  # nothing to change: no runtime command sent
    generate.limit = 5
    assert limits.sync() == 1
    assert server_limits(runtime_command(sock, "show stat"), SERVER)[("http-app-mmrag-generate", "generate")] == "5"
    search.limit = 2


def test_haproxy_refuses_beyond_the_limit_fast_with_the_gateways_json(haproxy) -> None:  # type: ignore[no-untyped-def]
    url, sock = haproxy
    gate = Gate("search", slo_s=1, initial=2)
    ProxyLimits({"/v1/search": gate}, SERVER, path=sock).sync()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: _get(url + "/v1/search"), range(10)))
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) == 2 and len(refused) == 8, [r[0] for r in results]
    assert all(r[1] >= SERVICE_S for r in ok)
    # refused after at most the 20 ms queue timeout, never after a service time
    assert max(r[1] for r in refused) < SERVICE_S / 2
    for _, _, headers, body in refused:
        assert headers["retry-after"] == "1" and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "overloaded"
    # other paths are not held to the search limit
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        others = list(pool.map(lambda _: _get(url + "/v1/collections"), range(6)))
    assert all(r[0] == 200 for r in others)


def test_a_thread_keeps_the_limit_and_stops(haproxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, sock = haproxy
    gate = Gate("search", slo_s=1, initial=3)
    limits = ProxyLimits({"/v1/search": gate}, SERVER, path=sock).start()
    try:
        deadline = time.time() + 5
        while time.time() < deadline:
            if server_limits(runtime_command(sock, "show stat"), SERVER)[("http-app-mmrag-search", "search")] == "3":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the limit never reached HAProxy")
        # a reload resets what the runtime API set; the next period sets it again
        runtime_command(sock, f"set maxconn server http-app-mmrag-search/{SERVER} 0")
        time.sleep(2.5)
        assert server_limits(runtime_command(sock, "show stat"), SERVER)[("http-app-mmrag-search", "search")] == "3"
    finally:
        limits.stop()
    # no socket: nothing happens and nothing fails
    assert ProxyLimits({"/v1/search": gate}, SERVER, path=str(tmp_path / "none.sock")).sync() == 0
