"""How the ingestion service spreads and scales with its job queues, not with its requests.

An upload call returns as soon as its files are staged (202 and the job), so Serve's own signals for the
``Ingestor`` deployment (requests in flight per replica) stay near zero however many jobs wait: its default router
would send a new upload to a replica with twenty queued jobs as readily as to an idle one, and its default
autoscaling policy would never add a replica. Each replica reports the jobs it holds (queued, waiting or running:
:meth:`mmrag.serve.ingestor.Ingestor.record_routing_stats` / ``record_autoscaling_stats``), and:

* :class:`FewestJobsRouter` sends each call to the replica with the fewest jobs, adding the uploads it sent there
  that the replica's last report does not count yet. Reports come every ``ingestor.stats_period_s`` through Serve's
  controller, and routing is concurrent (a second upload is routed while the first waits for its replica to accept
  it), so both the sends since a report and the sends still on their way count: an upload counts for the replica it
  is about to go to as soon as it is chosen, and moves if Serve routes it elsewhere. A replica reports how many
  uploads it has received in all; the router's own sends beyond that are in nobody's report yet. With several
  routers (gateway replicas) each counts only its own sends, which errs towards the reported figure.
* :func:`jobs_autoscaling_policy` asks for ``ceil(jobs / target_ongoing_requests)`` replicas, i.e.
  ``target_ongoing_requests`` reads "jobs per replica" for this deployment; Serve applies min/max replicas and the
  up/down-scale delays around it.

A new replica takes new uploads; jobs already queued stay with the replica that staged their files.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

#: the per-replica figure both use: jobs queued, waiting for the writer lease, or running
JOBS_METRIC = "ingest_jobs"
#: uploads (submit calls) the replica has received since it started, rejected ones included
RECEIVED = "ingest_submits_received"
#: a send chosen but never confirmed by Serve (a cancelled upload) stops counting after this long
UNCONFIRMED_TTL_S = 30.0

try:  # Ray Serve's router interface (ray[serve] >= 2.46); the policy below needs nothing from it
    from ray.serve.request_router import RequestRouter
except ImportError:  # pragma: no cover - the pinned Ray has it
    RequestRouter = object  # type: ignore[assignment,misc]


def _is_upload(pending_request: Any) -> bool:
    return str(getattr(getattr(pending_request, "metadata", None), "call_method", "")).startswith("submit")


def _request_key(pending_request: Any) -> Any:
    meta = getattr(pending_request, "metadata", None)
    return getattr(meta, "internal_request_id", None) or id(pending_request)


class FewestJobsRouter(RequestRouter):  # type: ignore[misc,valid-type]
    """Rank the ingestion replicas one by one by the jobs they hold (reported, plus this router's uploads not in the
    report yet), fewest first; equal loads in random order."""

    def initialize_state(self, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        self._clock = clock
        self._confirmed: dict[Any, int] = {}  # replica -> uploads Serve routed there (this router, all time)
        self._chosen: dict[Any, tuple[Any, float]] = {}  # request -> (replica it is about to go to, when chosen)

    def _load(self, replica: Any) -> int:
        stats = getattr(replica, "routing_stats", None) or {}
        rid = replica.replica_id
        unreported = max(0, self._confirmed.get(rid, 0) - int(stats.get(RECEIVED, 0)))
        now = self._clock()
        on_the_way = sum(1 for r, t in self._chosen.values() if r == rid and now - t < UNCONFIRMED_TTL_S)
        return int(stats.get(JOBS_METRIC, 0)) + unreported + on_the_way

    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> list[list[Any]]:
        if not candidate_replicas:
            return []
        now = self._clock()
        for key in [k for k, (_, t) in self._chosen.items() if now - t >= UNCONFIRMED_TTL_S]:
            del self._chosen[key]
        upload = _is_upload(pending_request)
        key = _request_key(pending_request) if upload else None
        if upload:
            self._chosen.pop(key, None)  # routed again (its replica refused it): choose afresh
        ranked = sorted(candidate_replicas, key=lambda r: (self._load(r), random.random()))
        if upload:
            self._chosen[key] = (ranked[0].replica_id, now)
        return [[r] for r in ranked]

    def on_request_routed(self, pending_request: Any, replica_id: Any, result: Any) -> None:
        if _is_upload(pending_request):
            self._chosen.pop(_request_key(pending_request), None)
            self._confirmed[replica_id] = self._confirmed.get(replica_id, 0) + 1


def jobs_autoscaling_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Serve autoscaling policy for the ingestion service: replicas for the jobs held, ``target_ongoing_requests``
    jobs each (Serve rounds and bounds the result and applies the scaling delays)."""
    if not ctx.current_num_replicas:
        return ctx.target_num_replicas, {}
    per = float(ctx.config.get_target_ongoing_requests())
    held = (ctx.aggregated_metrics or {}).get(JOBS_METRIC) or {}
    jobs = float(sum(held.values()))
    return max(jobs, float(ctx.total_num_requests or 0)) / per, {}


__all__ = ["JOBS_METRIC", "RECEIVED", "FewestJobsRouter", "jobs_autoscaling_policy"]
