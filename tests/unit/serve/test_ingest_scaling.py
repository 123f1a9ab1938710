"""Job-aware routing and autoscaling of the ingestion service: uploads go to the replica holding the fewest jobs
(counting those sent since its last report), the deployment is sized by jobs, and Serve accepts both as configured."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from mmrag.config import load_config
from mmrag.serve.ingest_scaling import JOBS_METRIC, STATS_SEQ, FewestJobsRouter, jobs_autoscaling_policy

pytestmark = pytest.mark.unit


def _replica(rid: str, jobs: int, seq: int) -> SimpleNamespace:
    return SimpleNamespace(replica_id=rid, routing_stats={JOBS_METRIC: float(jobs), STATS_SEQ: float(seq)})


def _router() -> FewestJobsRouter:
    r = FewestJobsRouter.__new__(FewestJobsRouter)  # Serve builds it with its handle's internals; the policy is ours
    r.initialize_state()
    return r


def _submit() -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(call_method="submit_files"))


def test_uploads_go_to_the_fewest_jobs_and_a_burst_spreads() -> None:
    router = _router()
    a, b, c = _replica("a", 3, 1), _replica("b", 0, 1), _replica("c", 1, 1)
    ranks = asyncio.run(router.choose_replicas([a, b, c]))
    assert [[r.replica_id for r in rank] for rank in ranks] == [["b"], ["c"], ["a"]]

    # a burst between two reports: what was sent counts, so b, then b/c, ... rather than b every time
    chosen = []
    for _ in range(4):
        best = asyncio.run(router.choose_replicas([a, b, c]))[0][0]
        chosen.append(best.replica_id)
        router.on_request_routed(_submit(), best.replica_id, None)
    # b took the first (0 jobs), then b and c level up together; a (3 jobs) never: 5 jobs now split 2/3 or 3/2
    assert "a" not in chosen and chosen[0] == "b", chosen
    assert sorted([router._load(b), router._load(c)]) == [2, 3], chosen
    # reads (job status, deletes) are not jobs
    router.on_request_routed(SimpleNamespace(metadata=SimpleNamespace(call_method="job")), "a", None)
    assert router._load(a) == 3

    # a new report from b replaces what was counted for it
    b2 = _replica("b", 1, 2)
    assert router._load(b2) == 1


def test_equal_loads_share_a_rank() -> None:
    ranks = asyncio.run(_router().choose_replicas([_replica("a", 0, 1), _replica("b", 0, 1)]))
    assert len(ranks) == 1 and {r.replica_id for r in ranks[0]} == {"a", "b"}
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
