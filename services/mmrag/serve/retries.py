"""Retrying the gateway's idempotent calls once when the replica answering them dies.

A search is read-only: when the retriever or reranker replica it was routed to dies under it (SIGKILL, OOM, a node
lost), the same call on another replica gives the same answer, so the caller should not see the failure. Serve's
router drops a replica from its candidates once a call to it fails with the actor's death, so the retry goes to a
live replica (or waits for Serve's replacement) within the deadline.

Only calls that change nothing are retried: searches, query encoding, reranking, job lookups. Generation is never
retried (a stream may already have reached the client, and a second answer would cost a second decode), nor are
uploads and deletes (they would queue twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: pause before the retry: long enough for the handle to learn the replica is gone, short next to a search
RETRY_PAUSE_S = 0.05


def replica_failed(e: BaseException) -> bool:
    """Whether ``e`` says the replica (or its actor) failed, not the request: a dead or unreachable actor."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    return isinstance(e, RayActorError | ActorUnavailableError)


class Retries:
    """Counts what it retried (``retried``) and what still failed after a retry (``failed``), per call name."""

    def __init__(self, deadline_s: float, on_event: Callable[[str, str], None] | None = None) -> None:
        self.deadline_s = deadline_s
        self.on_event = on_event  # (call, "retried" | "failed"): the gateway's Prometheus counter
        self.retried: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    async def call(self, what: str, fn: Callable[[], Awaitable[T]], *, deadline_s: float | None = None) -> T:
        """``await fn()``, and once more if a replica failure interrupted it and the deadline leaves time; the
        second attempt is bounded by what remains of the deadline (``asyncio.TimeoutError`` past it)."""
        t0 = time.monotonic()
        limit = self.deadline_s if deadline_s is None else deadline_s
        try:
            return await fn()
        except Exception as e:
            left = limit - (time.monotonic() - t0) - RETRY_PAUSE_S
            if not replica_failed(e) or left <= 0:
                raise
            self.retried[what] = self.retried.get(what, 0) + 1
            if self.on_event is not None:
                self.on_event(what, "retried")
            log.warning("%s: a replica failed (%s); retrying once", what, type(e).__name__)
        await asyncio.sleep(RETRY_PAUSE_S)
        try:
            return await asyncio.wait_for(fn(), timeout=left)
        except BaseException:
            self.failed[what] = self.failed.get(what, 0) + 1
            if self.on_event is not None:
                self.on_event(what, "failed")
            raise


__all__ = ["RETRY_PAUSE_S", "Retries", "replica_failed"]
