"""HAProxy's stats page and metrics exporter bind loopback: the pinned Ray's template is rewritten on import in
every process (through the .pth), the API frontend is not touched, and MMRAG_HAPROXY_ADMIN_HOST opens them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmrag.compat.ray_haproxy import METRICS_BIND, STATS_BIND, rewrite

pytestmark = pytest.mark.unit

PROBE = (
    "import ray.serve._private.haproxy as h\n"
    "from mmrag.compat import ray_haproxy\n"
    "print(ray_haproxy.STATUS.get('haproxy'))\n"
    "print('\\n'.join(l.strip() for l in h.HAPROXY_CONFIG_TEMPLATE.splitlines() if l.strip().startswith('bind')))\n"
)


def _binds(env: dict[str, str]) -> tuple[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    status, *binds = out.stdout.strip().splitlines()
    return status, binds


def test_a_fresh_process_renders_loopback_binds() -> None:
    status, binds = _binds({})
    assert status == "patched", "the pinned Ray's template no longer has the bind lines this patch rewrites"
    assert "bind 127.0.0.1:{{ config.stats_port }}" in binds
    assert "bind 127.0.0.1:{{ config.metrics_port }}" in binds
    assert "bind {{ config.frontend_host }}:{{ config.frontend_port }}" in binds, "the API frontend is untouched"
    assert not any(b.startswith(("bind *:", "bind :")) for b in binds)


def test_the_admin_host_can_be_opened_on_purpose() -> None:
    _, binds = _binds({"MMRAG_HAPROXY_ADMIN_HOST": "0.0.0.0"})
    assert "bind 0.0.0.0:{{ config.stats_port }}" in binds


def test_rewrite_leaves_unknown_templates_alone() -> None:
    assert rewrite("listen x\n  bind 10.0.0.1:1\n", "127.0.0.1") is None
    t = f"a\n  {STATS_BIND}\n  {METRICS_BIND}\n"
    assert rewrite(t, "::1") == "a\n  bind [::1]:{{ config.stats_port }}\n  bind [::1]:{{ config.metrics_port }}\n"


RENDER = r"""
import json, subprocess, sys
from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig, get_haproxy_binary
from mmrag.compat import ray_haproxy
tmp = sys.argv[1]
servers = [ServerConfig(name="SERVE_REPLICA_app-Gateway-a", host="127.0.0.1", port=30001, replica_id="r-a"),
           ServerConfig(name="SERVE_REPLICA_app-Gateway-b", host="127.0.0.1", port=30002, replica_id="r-b")]
backends = {prefix: BackendConfig(name=f"http-app{i}", path_prefix=prefix, servers=servers, app_name=f"app{i}")
            for i, prefix in enumerate(["/", "/api"])}
api = HAProxyApi(cfg=HAProxyConfig(socket_path=tmp + "/admin.sock", metrics_socket_path=tmp + "/metrics.sock"),
                 backend_configs=backends, config_file_path=tmp + "/haproxy.cfg")
api._initialize_directories_and_error_files()
api._generate_config_file_internal()
check = subprocess.run([get_haproxy_binary(), "-c", "-f", tmp + "/haproxy.cfg"], capture_output=True, text=True)
print(json.dumps({"status": ray_haproxy.STATUS.get("admission"), "rc": check.returncode,
                  "check": check.stdout + check.stderr, "cfg": open(tmp + "/haproxy.cfg").read()}))
"""


def _render(tmp_path, env: dict[str, str] | None = None) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", RENDER, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_admission_backends_render_into_a_config_haproxy_accepts(tmp_path) -> None:
    r = _render(tmp_path)
    assert r["status"] == "patched", "the pinned Ray's template no longer has the anchors the admission patch uses"
    assert r["rc"] == 0, r["check"]
    cfg = r["cfg"]
    # each group's paths go to its own backend, under the app's route prefix, before the app's catch-all rule
    for i, prefix in enumerate(["", "/api"]):
        search = f"use_backend http-app{i}-mmrag-search if is_http-app{i} {{ path {prefix}/v1/search }}"
        gen_paths = f"{prefix}/v1/answer {prefix}/v1/chat/completions"
        gen = f"use_backend http-app{i}-mmrag-generate if is_http-app{i} {{ path {gen_paths} }}"
        plain = f"use_backend http-app{i} if is_http-app{i}"
        assert search in cfg and gen in cfg
        assert cfg.index(search) < cfg.index(plain + "\n")
        for group in ("search", "generate"):
            block = cfg.split(f"backend http-app{i}-mmrag-{group}\n", 1)[1].split("\nbackend ", 1)[0]
            assert "timeout queue 10ms" in block
            assert "errorfile 503 " in block
            # the same servers, tracking the app backend's health checks instead of checking again
            for s in ("SERVE_REPLICA_app-Gateway-a", "SERVE_REPLICA_app-Gateway-b"):
                assert f"server {s} 127.0.0.1:" in block and f"track http-app{i}/{s}" in block
            assert " check" not in block


def test_the_error_file_is_the_gateways_overloaded_json_with_retry_after(tmp_path) -> None:
    import json

    cfg = _render(tmp_path, {"MMRAG_HAPROXY_QUEUE_MS": "35"})["cfg"]
    assert "timeout queue 35ms" in cfg
    path = cfg.split("errorfile 503 ", 2)[2].split("\n", 1)[0]  # the group backends' one, not Serve's 500 file
    with open(path, "rb") as f:
        raw = f.read()
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert "Retry-After: 1" in lines and "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body)["error"]["code"] == "overloaded"


def test_admission_in_haproxy_can_be_turned_off(tmp_path) -> None:
    r = _render(tmp_path, {"MMRAG_HAPROXY_ADMISSION": "0"})
    assert r["status"] == "off" and "mmrag-search" not in r["cfg"] and r["rc"] == 0
