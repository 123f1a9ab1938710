"""Per-key quotas, shared by every gateway replica: requests per second and generated tokens per minute.

The counting is `limits`' moving-window limiter over its in-memory storage, held by one named Ray actor per app
(:class:`QuotaBook`, ``num_cpus=0``, detached so a gateway restart keeps the windows). Each gateway replica asks
it before a request of a key that has a limit (keys without one cost nothing) and tells it how many tokens an
answer generated afterwards; the token quota refuses a new generation once the last minute's tokens reached it.
A refusal is 429 with ``Retry-After`` (when the window frees the next slot). If the actor cannot be reached the
request goes through and the failure is logged: quotas share capacity fairly, they are not the access boundary.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from mmrag.auth.keys import Principal

log = logging.getLogger(__name__)


def rate_item(rate_per_s: float) -> Any:
    """A moving window for ``rate_per_s``: N per second, or one per K seconds below 1/s."""
    from limits import RateLimitItemPerSecond

    if rate_per_s >= 1:
        return RateLimitItemPerSecond(max(1, round(rate_per_s)), 1)
    return RateLimitItemPerSecond(1, max(1, round(1 / rate_per_s)))


def tokens_item(tokens_per_min: int) -> Any:
    from limits import RateLimitItemPerMinute

    return RateLimitItemPerMinute(tokens_per_min, 1)


@dataclass
class Verdict:
    ok: bool
    retry_after_s: float = 0.0
    limit: str = ""  # "requests" or "tokens"


class QuotaBook:
    """The windows of every key (one instance per app, as a Ray actor; used directly in unit tests)."""

    def __init__(self) -> None:
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, key_id: str, rate_per_s: float | None, tokens_per_min: int | None) -> Verdict:
        """Count one request of ``key_id`` if both of its windows have room."""
        now = time.time()
        if tokens_per_min:
            item = tokens_item(tokens_per_min)
            if not self._limiter.test(item, key_id, "tokens"):
                reset = self._limiter.get_window_stats(item, key_id, "tokens").reset_time
                return Verdict(False, max(0.0, reset - now), "tokens")
        if rate_per_s:
            item = rate_item(rate_per_s)
            if not self._limiter.hit(item, key_id, "requests"):
                reset = self._limiter.get_window_stats(item, key_id, "requests").reset_time
                return Verdict(False, max(0.0, reset - now), "requests")
        return Verdict(True)

    def charge(self, key_id: str, tokens_per_min: int, tokens: int) -> int:
        """Add an answer's generated tokens to the key's minute (up to what is left); returns what is left."""
        item = tokens_item(tokens_per_min)
        left = self._limiter.get_window_stats(item, key_id, "tokens").remaining
        if tokens > 0 and left > 0:
            self._limiter.hit(item, key_id, "tokens", cost=min(tokens, left))
            left -= min(tokens, left)
        return left


class QuotaExceeded(Exception):
    def __init__(self, principal: Principal, verdict: Verdict) -> None:
        self.retry_after_s = verdict.retry_after_s
        if verdict.limit == "tokens":
            what = f"{principal.tokens_per_min} generated tokens per minute"
        else:
            what = f"{principal.rate_per_s:g} requests per second"
        super().__init__(f"this key's quota of {what} is used up; retry after {self.retry_after():d} s")

    def retry_after(self) -> int:
        return max(1, math.ceil(self.retry_after_s))


class Quotas:
    """A gateway replica's side: asks the app's :class:`QuotaBook` actor (or a local book, in tests)."""

    def __init__(self, name: str | None, book: QuotaBook | None = None) -> None:
        self.name = name
        self._book = book
        self._actor: Any = None

    def _handle(self) -> Any:
        if self._actor is None:
            import ray

            cls = ray.remote(num_cpus=0, max_restarts=-1)(QuotaBook)
            self._actor = cls.options(  # type: ignore[attr-defined]
                name=self.name, namespace="mmrag", get_if_exists=True, lifetime="detached"
            ).remote()
        return self._actor

    async def admit(self, p: Principal, *, generates: bool) -> None:
        """Raise :class:`QuotaExceeded` when ``p`` is over a quota; free for keys without quotas."""
        tokens = p.tokens_per_min if generates else None
        if p.key_id is None or not (p.rate_per_s or tokens):
            return
        if self._book is not None:
            verdict = self._book.admit(p.key_id, p.rate_per_s, tokens)
        else:
            try:
                verdict = await self._handle().admit.remote(p.key_id, p.rate_per_s, tokens)
            except Exception:
                log.exception("the quota actor %s did not answer; letting the request through", self.name)
                self._actor = None
                return
        if not verdict.ok:
            raise QuotaExceeded(p, verdict)

    def charge(self, p: Principal, tokens: int) -> None:
        """Count an answer's generated tokens against ``p``'s minute (fire and forget)."""
        if p.key_id is None or not p.tokens_per_min or tokens <= 0:
            return
        if self._book is not None:
            self._book.charge(p.key_id, p.tokens_per_min, tokens)
            return
        try:
            self._handle().charge.remote(p.key_id, p.tokens_per_min, tokens)
        except Exception:
            log.exception("could not charge %d tokens to key %s", tokens, p.key_id)
            self._actor = None


__all__ = ["QuotaBook", "QuotaExceeded", "Quotas", "Verdict", "rate_item", "tokens_item"]
