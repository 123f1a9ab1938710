"""mmrag.lifetime: which processes a run owns, the sweep, and the reaper that sweeps when the server is killed.

Real processes (``sleep``, small Python scripts) stand in for Ray's; no Ray starts here
(tests/integration/test_clean_stop.py does it with a real ``mmrag serve``)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmrag.constants import ENV_RUN_ID
from mmrag.lifetime import owned_pids, sweep

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfds")]


def _fake_proc(root: Path, pid: int, env: dict[str, str], fds: dict[int, tuple[Path, int]] = ()) -> None:
    """A /proc/PID entry: its environ and, per fd, the file it points at and its open flags (octal, as fdinfo)."""
    base = root / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "fdinfo").mkdir()
    (base / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
    for fd, (target, flags) in dict(fds).items():
        os.symlink(target, base / "fd" / str(fd))
        (base / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t{flags:o}\nmnt_id:\t1\n")


def test_owned_processes_carry_the_run_id_or_write_into_the_ray_session(tmp_path: Path) -> None:
    proc, session, other = tmp_path / "proc", tmp_path / "session_1", tmp_path / "session_10"
    for d in (session / "logs", other / "logs"):
        d.mkdir(parents=True)
    log, foreign = session / "logs" / "worker.out", other / "logs" / "worker.out"
    log.touch(), foreign.touch()
    wr, ro = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, os.O_RDONLY | os.O_CLOEXEC
    _fake_proc(proc, 100, {"PATH": "/bin", ENV_RUN_ID: "abc"})  # HAProxy: the run id, inherited
    _fake_proc(proc, 101, {}, {1: (log, wr)})  # vLLM's engine: environment overwritten by setproctitle, logs open
    _fake_proc(proc, 102, {}, {3: (log, ro)})  # someone reading the log (`tail -f`): not ours
    _fake_proc(proc, 103, {ENV_RUN_ID: "abcd"}, {1: (foreign, wr)})  # another run, another session (a prefix of ours)
    _fake_proc(proc, 104, {ENV_RUN_ID: "abc"})  # the server itself, excluded by the caller
    _fake_proc(proc, 105, {"X": f"{ENV_RUN_ID}=abc-and-more"})  # the mark only as part of another value
    (proc / "self").mkdir()
    assert owned_pids("abc", [str(session)], exclude={104}, proc=str(proc)) == {100, 101}
    assert owned_pids("abc", proc=str(proc)) == {100, 104}
    # killed before ray.init returned its directory: Ray names the session after its driver's pid
    ray_dir = tmp_path / "ray" / "session_2026-12-04_20-11-52_653927_4321" / "logs"
    ray_dir.mkdir(parents=True)
    (ray_dir / "dashboard_agent.log").touch()
    _fake_proc(proc, 106, {}, {7: (ray_dir / "dashboard_agent.log", wr)})
    assert owned_pids("abc", driver=4321, proc=str(proc)) == {100, 104, 106}
    assert owned_pids("abc", driver=321, proc=str(proc)) == {100, 104}


def _spawn(code: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **kw)


def _gone_within(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def test_sweep_terms_then_kills_what_ignores_sigterm() -> None:
    env = {**os.environ, ENV_RUN_ID: "sweep-test"}
    polite = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    stubborn = _spawn(
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)",
        env,
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    bystander = subprocess.Popen(["sleep", "60"])  # no mark: left alone
    try:
        assert stubborn.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        assert set(sweep("sweep-test", term_grace_s=0.5, kill_wait_s=2)) == {polite.pid, stubborn.pid}
        assert time.monotonic() - t0 < 3
        assert polite.wait(1) == -signal.SIGTERM and stubborn.wait(1) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for p in (polite, stubborn, bystander):
            p.kill()
            p.wait()


SERVER = """
    import subprocess, sys, time
    from mmrag.lifetime import guarded
    with guarded(5) as guard:
        # stands in for Ray's processes: its own session, as Ray's workers are their own process groups
        child = subprocess.Popen(["sleep", "120"], start_new_session=True)
        try:
            print(child.pid, guard.reaper.pid, flush=True)  # the test signals as soon as it reads this
            {body}
        except KeyboardInterrupt:  # the signal came before guard.wait() (a loaded machine): as `mmrag serve` does
            pass
    print("stopped", flush=True)
"""


def _server(body: str) -> tuple[subprocess.Popen, int, int]:
    p = _spawn(SERVER.format(body=body), stdout=subprocess.PIPE, start_new_session=True)
    child, reaper = map(int, p.stdout.readline().split())
    return p, child, reaper


def test_a_killed_server_leaves_nothing_running() -> None:
    server, child, reaper = _server("time.sleep(120)")
    try:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        assert _gone_within(child, 10), "the reaper did not stop the killed server's child"
        assert _gone_within(reaper, 5)
    finally:
        for pid in (child, reaper):
            _kill(pid)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "exit"])
def test_a_stopped_server_stops_its_children_before_it_exits(how: str) -> None:
    server, child, reaper = _server("guard.wait()" if how != "exit" else "pass")
    try:
        if how == "sigterm":
            server.send_signal(signal.SIGTERM)
        elif how == "ctrl-c":
            os.killpg(server.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground process group
        assert server.stdout.readline() == b"stopped\n"
        assert server.wait(10) == 0
        assert _gone_within(child, 0) and _gone_within(reaper, 0)
    finally:
        for pid in (child, reaper):
            _kill(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_the_run_id_is_not_taken_for_a_config_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrag.config import load_config

    monkeypatch.setenv(ENV_RUN_ID, "0123")
    load_config("local-cpu")


def test_an_ingest_guard_stops_ray_but_leaves_serve_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # `mmrag ingest` may have joined a cluster whose Serve app is not its own: its stop must not shut Serve down
    import types

    from mmrag import lifetime

    calls: list[str] = []
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: True  # type: ignore[attr-defined]
    ray.shutdown = lambda: calls.append("ray")  # type: ignore[attr-defined]
    serve = types.ModuleType("ray.serve")
    serve.shutdown = lambda: calls.append("serve")  # type: ignore[attr-defined]
    ray.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.serve", serve)
    lifetime._graceful_shutdown(serve=False)
    assert calls == ["ray"]
    calls.clear()
    lifetime._graceful_shutdown()
    assert calls == ["serve", "ray"]
