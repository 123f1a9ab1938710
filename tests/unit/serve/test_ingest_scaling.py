"""Job-aware routing and autoscaling of the ingestion service: uploads go to the replica holding the fewest jobs
(counting those sent since its last report), the deployment is sized by jobs, and Serve accepts both as configured."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from mmrag.config import load_config
from mmrag.serve.ingest_scaling import (
    JOBS_METRIC,
    RECEIVED,
    UNCONFIRMED_TTL_S,
    FewestJobsRouter,
    jobs_autoscaling_policy,
)

pytestmark = pytest.mark.unit


def _replica(rid: str, jobs: int, received: int = 0) -> SimpleNamespace:
    return SimpleNamespace(replica_id=rid, routing_stats={JOBS_METRIC: float(jobs), RECEIVED: float(received)})


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _router(clock: _Clock | None = None) -> FewestJobsRouter:
    r = FewestJobsRouter.__new__(FewestJobsRouter)  # Serve builds it with its handle's internals; the policy is ours
    r.initialize_state(clock=clock or _Clock())
    return r


_ids = iter(range(10**6))


def _submit() -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(call_method="submit_files", internal_request_id=f"r{next(_ids)}"))


def _ids_of(ranks: list[list[SimpleNamespace]]) -> list[str]:
    assert all(len(rank) == 1 for rank in ranks)  # one replica per rank: the first is the one counted
    return [rank[0].replica_id for rank in ranks]


def test_uploads_go_to_the_fewest_jobs_and_a_burst_spreads() -> None:
    router = _router()
    a, b, c = _replica("a", 3), _replica("b", 0), _replica("c", 1)
    assert _ids_of(asyncio.run(router.choose_replicas([a, b, c]))) == ["b", "c", "a"]

    # a burst between two reports: what was sent counts, so b, then b/c, ... rather than b every time
    chosen = []
    for _ in range(4):
        req = _submit()
        best = asyncio.run(router.choose_replicas([a, b, c], req))[0][0]
        chosen.append(best.replica_id)
        router.on_request_routed(req, best.replica_id, None)
    # b took the first (0 jobs), then b and c level up together; a (3 jobs) never: 5 jobs now split 2/3 or 3/2
    assert "a" not in chosen and chosen[0] == "b", chosen
    assert sorted([router._load(b), router._load(c)]) == [2, 3], chosen
    # reads (job status, deletes) are not jobs
    router.on_request_routed(SimpleNamespace(metadata=SimpleNamespace(call_method="job")), "a", None)
    assert router._load(a) == 3

    # b reports the uploads it received: they are in its job count now, not counted twice
    sent_b = chosen.count("b")
    assert router._load(_replica("b", sent_b, received=sent_b)) == sent_b
    # a report made before the last upload reached b still leaves that upload counted
    assert router._load(_replica("b", sent_b - 1, received=sent_b - 1)) == sent_b


def test_uploads_routed_at_the_same_time_spread() -> None:
    """Serve routes concurrently: a second upload is chosen before the first is confirmed (the replica's accept is a
    round trip away), so the choice itself counts."""
    router = _router()
    a, b = _replica("a", 0), _replica("b", 0)
    reqs = [_submit() for _ in range(4)]
    firsts = [asyncio.run(router.choose_replicas([a, b], r))[0][0].replica_id for r in reqs]
    assert sorted(firsts) == ["a", "a", "b", "b"], firsts
    # Serve sent the first elsewhere (its first choice refused it): the count moves with it
    other = "b" if firsts[0] == "a" else "a"
    router.on_request_routed(reqs[0], other, None)
    assert router._load(a if other == "a" else b) == 3
    for req, rid in zip(reqs[1:], firsts[1:], strict=True):
        router.on_request_routed(req, rid, None)
    assert router._load(a) + router._load(b) == 4


def test_a_choice_never_confirmed_stops_counting() -> None:
    clock = _Clock()
    router = _router(clock)
    a = _replica("a", 0)
    asyncio.run(router.choose_replicas([a], _submit()))  # cancelled before Serve routed it
    assert router._load(a) == 1
    clock.t += UNCONFIRMED_TTL_S + 1
    assert router._load(a) == 0
    asyncio.run(router.choose_replicas([a]))
    assert router._chosen == {}


def test_equal_loads_come_in_random_order() -> None:
    seen = {_ids_of(asyncio.run(_router().choose_replicas([_replica("a", 0), _replica("b", 0)])))[0] for _ in range(40)}
    assert seen == {"a", "b"}
    assert asyncio.run(_router().choose_replicas([])) == []


def _ctx(replicas: int, jobs: dict[str, float], requests: float = 0.0, per: float = 2.0) -> SimpleNamespace:
    return SimpleNamespace(
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        total_num_requests=requests,
        aggregated_metrics={JOBS_METRIC: jobs} if jobs else {},
        config=SimpleNamespace(get_target_ongoing_requests=lambda: per),
    )


def test_the_policy_sizes_by_jobs_held() -> None:
    assert jobs_autoscaling_policy(_ctx(1, {"r1": 7.0}))[0] == 3.5  # 7 jobs, 2 per replica: Serve rounds up to 4
    assert jobs_autoscaling_policy(_ctx(2, {"r1": 1.0, "r2": 0.0}))[0] == 0.5
    assert jobs_autoscaling_policy(_ctx(2, {}))[0] == 0.0  # idle: Serve keeps min_replicas
    assert jobs_autoscaling_policy(_ctx(1, {"r1": 0.0}, requests=6))[0] == 3.0  # uploads in flight count too
    assert jobs_autoscaling_policy(_ctx(0, {}))[0] == 0  # no replica yet: Serve's cold start decides


def test_serve_takes_the_ingestor_options() -> None:
    from ray.serve._private.autoscaling_state import _resolve_policy_callable
    from ray.serve.config import AutoscalingConfig

    from mmrag.serve.ingestor import Ingestor

    cfg = load_config("gpu", {})
    opts = cfg.ingestor.serve_options()
    auto = AutoscalingConfig(**opts["autoscaling_config"])
    assert _resolve_policy_callable(auto.policy) is not None
    assert auto.metrics_interval_s == cfg.ingestor.stats_period_s
    router = opts["request_router_config"]
    assert router.request_router_class.endswith(":FewestJobsRouter")
    assert router.request_routing_stats_period_s == cfg.ingestor.stats_period_s
    dep = Ingestor.options(**opts)  # Serve's own validation of every option
    assert dep._deployment_config.request_router_config.get_request_router_class() is FewestJobsRouter
    fixed = load_config("local-cpu", {}).ingestor.serve_options()
    assert "autoscaling_config" not in fixed and "request_router_config" in fixed
