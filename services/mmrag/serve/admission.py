"""Admission control: under overload, refuse at once what could not be served within the latency SLO.

Each gateway replica keeps one :class:`Gate` per endpoint group (search; generation: answer and chat). A request
enters if fewer than ``limit`` requests of its group are in flight on the replica, else it is answered 503
``overloaded`` with ``Retry-After`` before any work is done (well under a millisecond).

The limit follows Little's law: the requests a replica may hold is the rate at which it drains them times the
time they may spend (``L = λ·W``), with ``W`` 0.4 of the latency SLO: a request admitted behind ``limit`` others
waits about ``limit / λ`` = 0.4 SLO on average, which leaves the rest for the tail (at half, the admitted p99 at 4x
capacity was 974 ms of a 1 s SLO: no margin for the capacity's own wobble). ``λ`` is
measured, not configured: each window (1 s) the gate counts completions, and when the window shows the replica was
saturated (it refused requests, or its in-flight count reached the limit) that window's completion rate updates a
moving estimate of its capacity, and ``limit = ceil(capacity × SLO × 0.4)``. If the admitted requests' p90 latency still
overran the SLO (the capacity behind the gateway fell), the limit is cut by a fifth at once. Until the first
saturated window the limit is ``admission.initial_inflight``. With ``admission.max_inflight`` set the limit is that
number and nothing adapts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmrag.config import AdmissionConfig

WINDOW_S = 1.0
EWMA = 0.5
#: The share of the SLO that queueing may take on average (Little's law's W); the rest is for the tail.
QUEUE_SHARE = 0.4


class Gate:
    def __init__(
        self,
        name: str,
        *,
        slo_s: float,
        initial: int,
        floor: int = 1,
        ceiling: int = 4096,
        fixed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.slo_s = slo_s
        self.floor, self.ceiling = floor, ceiling
        self.fixed = fixed
        self.limit = fixed if fixed is not None else max(floor, min(initial, ceiling))
        self.inflight = 0
        self.capacity: float | None = None  # completions/s when saturated (EWMA)
        self._clock = clock
        self._t0 = clock()
        self._done = 0
        self._refused = 0
        self._peak = 0
        self._lat: list[float] = []
        self.refused_total = 0

    def enter(self) -> bool:
        self._tick()
        if self.inflight >= self.limit:
            self._refused += 1
            self.refused_total += 1
            return False
        self.inflight += 1
        self._peak = max(self._peak, self.inflight)
        return True

    def leave(self, latency_s: float, *, counted: bool = True) -> None:
        """A request left; ``counted=False`` for one refused after it entered (a quota), which served nothing."""
        self.inflight -= 1
        if counted:
            self._done += 1
            if len(self._lat) < 10_000:
                self._lat.append(latency_s)
        self._tick()

    def retry_after_s(self) -> int:
        """Seconds until the queue ahead has drained, at the estimated capacity (at least 1)."""
        if not self.capacity:
            return 1
        return max(1, math.ceil(self.inflight / self.capacity))

    def _tick(self) -> None:
        now = self._clock()
        elapsed = now - self._t0
        if elapsed < WINDOW_S:
            return
        if self.fixed is None:
            saturated = self._refused > 0 or self._peak >= self.limit
            if saturated and self._done:
                rate = self._done / elapsed
                self.capacity = rate if self.capacity is None else EWMA * rate + (1 - EWMA) * self.capacity
                want = math.ceil(self.capacity * self.slo_s * QUEUE_SHARE)
                self.limit = max(self.floor, min(self.ceiling, want))
            if self._lat:
                lat = sorted(self._lat)
                if lat[int(0.9 * (len(lat) - 1))] > self.slo_s:
                    self.limit = max(self.floor, int(self.limit * 0.8))
        self._t0, self._done, self._refused, self._peak, self._lat = now, 0, 0, self.inflight, []

    def state(self) -> dict[str, float | int | None]:
        return {
            "limit": self.limit,
            "inflight": self.inflight,
            "capacity_rps": None if self.capacity is None else round(self.capacity, 2),
            "refused": self.refused_total,
        }


def gates(cfg: AdmissionConfig) -> dict[str, Gate]:
    """path -> Gate (the two generation paths share one); none when admission control is off."""
    if not cfg.enabled:
        return {}
    common = {"initial": cfg.initial_inflight, "floor": cfg.min_inflight, "fixed": cfg.max_inflight}
    search = Gate("search", slo_s=cfg.search_slo_ms / 1e3, **common)
    generate = Gate("generate", slo_s=cfg.generate_slo_ms / 1e3, **common)
    return {"/v1/search": search, "/v1/answer": generate, "/v1/chat/completions": generate}


__all__ = ["Gate", "gates"]
