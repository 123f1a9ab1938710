"""Admission gates: refuse at once beyond the in-flight limit, and derive the limit from the measured drain rate
times the SLO (Little's law), on a simulated clock and a simulated server of known capacity."""

from __future__ import annotations

import math

import pytest

from mmrag.config import AdmissionConfig
from mmrag.serve.admission import QUEUE_SHARE, Gate, gates

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(gate: Gate, clock: Clock, *, arrival_rps: float, capacity_rps: float, seconds: float) -> dict:
    """A FIFO server draining ``capacity_rps``; arrivals at a fixed rate; latencies of admitted requests."""
    queue: list[float] = []  # arrival times of admitted, unfinished requests
    dt = 0.001
    next_arrival, next_done = 0.0, None
    admitted = refused = 0
    lat: list[float] = []
    while clock.t < seconds:
        clock.t += dt
        while next_arrival <= clock.t:
            next_arrival += 1 / arrival_rps
            if gate.enter():
                admitted += 1
                queue.append(clock.t)
                if next_done is None:
                    next_done = clock.t + 1 / capacity_rps
            else:
                refused += 1
        while next_done is not None and next_done <= clock.t:
            started = queue.pop(0)
            lat.append(clock.t - started)
            gate.leave(clock.t - started)
            next_done = next_done + 1 / capacity_rps if queue else None
    late = lat[len(lat) // 2 :]  # after the gate settled
    return {"admitted": admitted, "refused": refused, "p99": sorted(late)[int(0.99 * (len(late) - 1))]}


def test_refuses_beyond_the_limit_and_counts() -> None:
    g = Gate("search", slo_s=1.0, initial=2, fixed=2)
    assert g.enter() and g.enter() and not g.enter()
    g.leave(0.1)
    assert g.enter() and g.state()["refused"] == 1 and g.state()["inflight"] == 2


def test_the_limit_is_capacity_times_slo_and_keeps_latency_within_it() -> None:
    clock = Clock()
    g = Gate("search", slo_s=0.5, initial=500, clock=clock)
    out = simulate(g, clock, arrival_rps=200, capacity_rps=50, seconds=30)  # 4x overload
    assert g.capacity == pytest.approx(50, rel=0.15)
    assert g.limit == pytest.approx(math.ceil(50 * 0.5 * QUEUE_SHARE), abs=4)
    assert out["p99"] <= 0.5, out
    assert out["refused"] > out["admitted"]  # most of a 4x overload is shed


def test_no_refusals_below_capacity() -> None:
    clock = Clock()
    g = Gate("search", slo_s=0.5, initial=64, clock=clock)
    out = simulate(g, clock, arrival_rps=40, capacity_rps=50, seconds=10)
    assert out["refused"] == 0 and g.limit == 64, "an unsaturated gate keeps its limit"


def test_a_latency_overrun_cuts_the_limit() -> None:
    clock = Clock()
    g = Gate("search", slo_s=0.1, initial=100, clock=clock)
    for _ in range(10):
        assert g.enter()
    clock.t += 1.2
    for _ in range(10):
        g.leave(0.5)  # every request took 5x the SLO
    assert g.limit < 100


def test_gates_from_config() -> None:
    gs = gates(AdmissionConfig())
    assert set(gs) == {"/v1/search", "/v1/answer", "/v1/chat/completions"}
    assert gs["/v1/answer"] is gs["/v1/chat/completions"] and gs["/v1/search"] is not gs["/v1/answer"]
    assert gates(AdmissionConfig(enabled=False)) == {}
    assert gates(AdmissionConfig(max_inflight=7))["/v1/search"].limit == 7
