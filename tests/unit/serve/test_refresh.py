"""The retriever's refresh loop: runs on its own, survives a failing store, and the health check only fails when the
loop is gone."""

from __future__ import annotations

import threading
import time

import pytest

from mmrag.serve.refresh import IndexRefresher

pytestmark = pytest.mark.unit


class FlakyIndex:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = threading.Event()

    def refresh(self) -> bool:
        self.calls += 1
        if self.fail.is_set():
            raise OSError("store unreachable")
        return self.calls % 2 == 0


def _until(cond, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout_s
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_refreshes_periodically_and_keeps_going_through_failures() -> None:
    idx = FlakyIndex()
    r = IndexRefresher(idx, 0.02).start()
    try:
        _until(lambda: idx.calls >= 4)
        assert r.refreshes >= 2 and r.failures == 0
        idx.fail.set()
        _until(lambda: r.failures >= 3)
        assert "store unreachable" in (r.state()["last_error"] or "")
        r.check()  # a failing store does not make the replica unhealthy
        idx.fail.clear()
        _until(lambda: r.failures == 0)
        assert r.state()["last_error"] is None
    finally:
        r.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_health_check_fails_when_the_loop_died() -> None:
    class Broken:
        def refresh(self) -> bool:
            raise SystemExit  # not an Exception: ends the thread

    r = IndexRefresher(Broken(), 0.01).start()
    _until(lambda: not r._thread.is_alive())
    with pytest.raises(RuntimeError, match="refresh loop died"):
        r.check()
