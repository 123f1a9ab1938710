"""Clean stops, with a real `mmrag serve` in a subprocess (as the README starts it): killed with SIGKILL, nothing it
started keeps running or holds a port (Ray's processes, Ray Serve's HAProxy on the serve port and 8404/9101, vLLM's
engine), and a second `mmrag serve` on the same port comes up; stopped with SIGTERM, it exits within
``server.stop_timeout_s`` + 5 s, leaving nothing.

The killed server runs local-cpu's real vLLM generator (SmolLM2): vLLM's engine-core and worker processes were
the ones found running an hour after such a kill. The second one deploys no generator, the cheapest app there is.
Ctrl-C and SIGTERM while starting are covered without Ray by tests/unit/test_lifetime.py. `mmrag ingest` on its own
local Ray gets the same guarantee when killed mid-run."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mmrag.config import load_config
from mmrag.constants import ENV_RUN_ID
from mmrag.lifetime import owned_pids

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the clean-stop guarantee is Linux's (/proc)"),
]

HAPROXY_PORTS = (8404, 9101)  # HAProxy's stats page and Prometheus exporter: fixed in Ray Serve 2.60
#: The stop bound `mmrag serve` documents (server.stop_timeout_s + 5 s), and a moment for the interpreter to leave.
STOP_BOUND_S = load_config("local-cpu").server.stop_timeout_s + 5 + 1
#: What a killed server's reaper needs (mmrag.lifetime.sweep: at most 5 s), and a moment to notice the death.
KILLED_BOUND_S = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """Running: a zombie (killed, not yet reaped by whoever inherited it) holds no port and no memory."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _descendants(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError), open(f"/proc/{name}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                out[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")[:300]
            todo.append(pid)
    return out


class Server:
    """`python -m mmrag.cli.main serve --port PORT` with MMRAG_* overrides; its output in a file."""

    def __init__(self, port: int, log: Path, **overrides: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("MMRAG_")}
        env |= {"MMRAG_HOME": os.environ["MMRAG_HOME"], "RAY_USAGE_STATS_ENABLED": "0", **overrides}
        self.log = log
        self.port = port
        with log.open("w") as out:
            cmd = [sys.executable, "-m", "mmrag.cli.main", "serve", "--port", str(port)]
            # its own session, as from a shell: a signal to our group never reaches it by accident
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while "is serving on" not in self.output():
            assert self.proc.poll() is None, f"mmrag serve exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"not serving after {timeout} s:\n{self.output()[-3000:]}"
            time.sleep(0.5)
        r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=30)
        assert r.status_code == 200, r.text

    def inventory(self) -> tuple[dict[int, str], str, str]:
        return _inventory(self.proc.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _inventory(root: int) -> tuple[dict[int, str], str, str]:
    """What ``root`` started (its process tree now), the run id they carry, and the Ray session directory."""
    tree = _descendants(root)
    raylet = next(pid for pid, cmd in tree.items() if "/raylet " in cmd)
    with open(f"/proc/{raylet}/environ", "rb") as f:
        run_id = next(
            v.split(b"=", 1)[1].decode() for v in f.read().split(b"\0") if v.startswith(f"{ENV_RUN_ID}=".encode())
        )
    with open(f"/proc/{raylet}/cmdline", "rb") as f:
        session = next(a.split("=", 1)[1] for a in f.read().decode().split("\0") if a.startswith("--session_dir="))
    return tree, run_id, session


def _wait_nothing_left(tree: dict[int, str], run_id: str, session: str, port: int, timeout: float) -> float:
    """Seconds until no process of ``tree``, none carrying ``run_id`` or writing into ``session``, and nothing
    listening on ``port``, 8404 or 9101 remains; fails with what is left after ``timeout``."""
    t0 = time.monotonic()
    while True:
        left = {pid: cmd for pid, cmd in tree.items() if _alive(pid)}
        left |= {pid: tree.get(pid, "(by run id or session)") for pid in owned_pids(run_id, [session]) if _alive(pid)}
        ports = [p for p in (port, *HAPROXY_PORTS) if _listening(p)]
        if not left and not ports:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            for pid in left:  # leave the machine clean for the next test
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"{timeout} s after the stop: still running {left}, ports still listening {ports}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def port() -> int:
    busy = [p for p in HAPROXY_PORTS if _listening(p)]
    assert not busy, f"ports {busy} are taken: another Ray Serve app with HAProxy runs on this machine; stop it first"
    return _free_port()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("clean-stop") / "db")


LEAN = {  # one replica each, no upload service: the fewest processes that still make the whole app
    "MMRAG_RETRIEVER__NUM_REPLICAS": "1",
    "MMRAG_RERANKER__NUM_REPLICAS": "1",
    "MMRAG_GATEWAY__NUM_REPLICAS": "1",
    "MMRAG_INGESTOR__ENABLED": "false",
}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_a_killed_server_leaves_nothing_running(mmrag_home: str, port: int, store: str, tmp_path: Path) -> None:
    server = Server(port, tmp_path / "serve.log", MMRAG_STORE__URI=store, **LEAN)  # local-cpu: vLLM + SmolLM2
    try:
        server.wait_serving(timeout=600)
        tree, run_id, session = server.inventory()
        cmds = " ".join(tree.values())
        assert "haproxy" in cmds and "VLLM::EngineCore" in cmds, tree  # the two that used to be orphaned
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        took = _wait_nothing_left(tree, run_id, session, port, KILLED_BOUND_S)
    finally:
        server.kill()
    print(f"killed server: {len(tree)} processes gone and ports free {took:.1f} s after SIGKILL")
    assert f"the server (pid {server.proc.pid}) ended; stopped the" in server.output()


def test_the_next_server_on_that_port_serves_and_stops_on_sigterm(
    mmrag_home: str, port: int, store: str, tmp_path: Path
) -> None:
    server = Server(port, tmp_path / "serve.log", MMRAG_STORE__URI=store, MMRAG_GENERATOR__ENGINE="none", **LEAN)
    try:
        server.wait_serving(timeout=300)  # same port, right after the killed one (if that test ran)
        tree, run_id, session = server.inventory()
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rc = server.proc.wait(timeout=STOP_BOUND_S + 30)
        took = time.monotonic() - t0
        _wait_nothing_left(tree, run_id, session, port, 0)  # nothing left at the moment it exited
    finally:
        server.kill()
    print(f"SIGTERM: exited ({rc}) after {took:.1f} s")
    assert took <= STOP_BOUND_S, f"stopped after {took:.1f} s, more than {STOP_BOUND_S} s:\n{server.output()[-2000:]}"
    assert rc in (0, 1), server.output()[-2000:]  # 1: the graceful part ran out of time and the rest was killed
    assert "stopped in" in server.output() or "did not stop within" in server.output()


def test_a_killed_ingest_leaves_nothing_running(mmrag_home: str, port: int, tmp_path: Path) -> None:
    """`mmrag ingest` on its own local Ray, SIGKILLed mid-run: its Ray (GCS, raylet, agents) and Ray Data's workers
    are all gone within the reaper's bound."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("MMRAG_")}
    env |= {"MMRAG_HOME": mmrag_home, "RAY_USAGE_STATS_ENABLED": "0", "MMRAG_INGEST__OCR": "always"}  # slow pages
    pdf = Path(__file__).resolve().parents[1] / "data" / "coin.pdf"
    cmd = [sys.executable, "-m", "mmrag.cli.main", "ingest", str(pdf), "--db", str(tmp_path / "db"), "--json"]
    log = tmp_path / "ingest.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # until Ray Data's stage actors run: the ingest is under way
            tree = _descendants(proc.pid)
            if any("/raylet " in c for c in tree.values()) and any("MapWorker" in c for c in tree.values()):
                break
            assert proc.poll() is None, f"ingest ended ({proc.returncode}) before the kill:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no Ray Data workers after 300 s: {tree}"
            time.sleep(0.5)
        time.sleep(2)  # its stages busy
        tree, run_id, session = _inventory(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        took = _wait_nothing_left(tree, run_id, session, port, KILLED_BOUND_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    print(f"killed ingest: {len(tree)} processes gone {took:.1f} s after SIGKILL")
