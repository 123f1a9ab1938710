"""The retriever's index refresh, in a loop of its own: never inside Serve's health check.

Serve's health check has a timeout and restarts a replica that misses it; a refresh after a large ingestion can take
longer than that, which restarted replicas into a reload loop while ingestion ran. Here one daemon thread per replica
calls :meth:`SearchIndex.refresh` every ``retriever.refresh_interval_s`` (0.5 s): a new table version builds a new
snapshot beside the current one, which searches keep using until it is swapped in (searches never wait for a
refresh). A refresh that fails (the store unreachable for a while) is logged and retried; the replica keeps serving
its last snapshot, and the health check fails only if the loop itself died.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class IndexRefresher:
    def __init__(self, index: Any, interval_s: float) -> None:
        self.index = index
        self.interval_s = interval_s
        self.refreshes = 0
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.last_ok = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmrag-index-refresh", daemon=True)

    def start(self) -> IndexRefresher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.index.refresh():
                    self.refreshes += 1
                self.failures, self.last_error, self.last_ok = 0, None, time.monotonic()
            except Exception as e:
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.exception("refreshing the search index failed (%d in a row); serving the last snapshot",
                                  self.failures)  # fmt: skip

    def check(self) -> None:
        """For Serve's health check: fails only when the loop is gone (a failing store is not the replica's fault,
        and a restarted replica could not load from it either)."""
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise RuntimeError("the search index refresh loop died")

    def state(self) -> dict[str, Any]:
        return {
            "refreshes": self.refreshes,
            "failures_in_a_row": self.failures,
            "last_error": self.last_error,
            "seconds_since_ok": round(time.monotonic() - self.last_ok, 3),
        }


__all__ = ["IndexRefresher"]
