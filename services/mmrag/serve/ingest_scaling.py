"""How the ingestion service spreads and scales with its job queues, not with its requests.

An upload call returns as soon as its files are staged (202 and the job), so Serve's own signals for the
``Ingestor`` deployment (requests in flight per replica) stay near zero however many jobs wait: its default router
would send a new upload to a replica with twenty queued jobs as readily as to an idle one, and its default
autoscaling policy would never add a replica. Each replica reports the jobs it holds (queued, waiting or running:
:meth:`mmrag.serve.ingestor.Ingestor.record_routing_stats` / ``record_autoscaling_stats``), and:

* :class:`FewestJobsRouter` sends each call to the replica with the fewest jobs, counting the calls it sent there
  since that replica last reported (reports come every ``ingestor.stats_period_s``; a burst of uploads in between
  would otherwise all land on one replica);
* :func:`jobs_autoscaling_policy` asks for ``ceil(jobs / target_ongoing_requests)`` replicas, i.e.
  ``target_ongoing_requests`` reads "jobs per replica" for this deployment; Serve applies min/max replicas and the
  up/down-scale delays around it.

A new replica takes new uploads; jobs already queued stay with the replica that staged their files.
"""

from __future__ import annotations

import random
from typing import Any

#: the per-replica figure both use: jobs queued, waiting for the writer lease, or running
JOBS_METRIC = "ingest_jobs"
#: the stats' sequence number: a replica's report is new when it changed
STATS_SEQ = "ingest_stats_seq"

try:  # Ray Serve's router interface (ray[serve] >= 2.46); the policy below needs nothing from it
    from ray.serve.request_router import RequestRouter
except ImportError:  # pragma: no cover - the pinned Ray has it
    RequestRouter = object  # type: ignore[assignment,misc]


class FewestJobsRouter(RequestRouter):  # type: ignore[misc,valid-type]
    """Rank the ingestion replicas by the jobs they hold (reported + sent since their report), fewest first."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._sent: dict[Any, int] = {}
        self._seq: dict[Any, Any] = {}

    def _load(self, replica: Any) -> int:
        stats = getattr(replica, "routing_stats", None) or {}
        rid = replica.replica_id
        seq = stats.get(STATS_SEQ)
        if self._seq.get(rid) != seq:  # a new report counts what we sent before it
            self._seq[rid] = seq
            self._sent[rid] = 0
        return int(stats.get(JOBS_METRIC, 0)) + self._sent.get(rid, 0)

    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> list[list[Any]]:
        if not candidate_replicas:
            return []
        by_load: dict[int, list[Any]] = {}
        for r in candidate_replicas:
            by_load.setdefault(self._load(r), []).append(r)
        ranks = []
        for load in sorted(by_load):
            rank = by_load[load]
            random.shuffle(rank)  # equal loads: spread
            ranks.append(rank)
        return ranks

    def on_request_routed(self, pending_request: Any, replica_id: Any, result: Any) -> None:
        method = getattr(getattr(pending_request, "metadata", None), "call_method", "")
        if method.startswith("submit"):
            self._sent[replica_id] = self._sent.get(replica_id, 0) + 1


def jobs_autoscaling_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Serve autoscaling policy for the ingestion service: replicas for the jobs held, ``target_ongoing_requests``
    jobs each (Serve rounds and bounds the result and applies the scaling delays)."""
    if not ctx.current_num_replicas:
        return ctx.target_num_replicas, {}
    per = float(ctx.config.get_target_ongoing_requests())
    held = (ctx.aggregated_metrics or {}).get(JOBS_METRIC) or {}
    jobs = float(sum(held.values()))
    return max(jobs, float(ctx.total_num_requests or 0)) / per, {}


__all__ = ["JOBS_METRIC", "STATS_SEQ", "FewestJobsRouter", "jobs_autoscaling_policy"]
