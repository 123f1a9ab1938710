"""Per-stage Prometheus metrics of the gateway, exported with Ray Serve's own.

They go through ``ray.serve.metrics`` (Ray's metrics agent), so one scrape of Ray's Prometheus endpoint (the
node's ``--metrics-export-port``; ``server.metrics_port`` when mmrag starts Ray itself) gives Ray Serve's
``ray_serve_*`` series and these, tagged with the deployment and replica:

* ``mmrag_requests_total{endpoint, status}`` — requests answered, by HTTP status;
* ``mmrag_stage_latency_ms{endpoint, stage}`` — time per stage: retrieve, rerank, prompt, ttft, generate, total;
* ``mmrag_generated_tokens_total{endpoint}`` — completion tokens the generator reported;
* ``mmrag_contexts_total{endpoint, modality}`` — items handed to the generator.

Ray prefixes custom metric names with ``ray_``: Prometheus sees ``ray_mmrag_stage_latency_ms_bucket`` etc.
"""

from __future__ import annotations

from typing import Any

#: Milliseconds: 1 ms .. 2 min, roughly x2 apart.
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000, 120000]


class GatewayMetrics:
    """The gateway's metric objects (created in the replica; ``enabled=False`` for in-process tests)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "mmrag_requests_total", description="Requests answered, by endpoint and HTTP status.",
            tag_keys=("endpoint", "status"),
        )  # fmt: skip
        self.latency = metrics.Histogram(
            "mmrag_stage_latency_ms",
            description="Time spent per stage of a request, in milliseconds.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint", "stage"),
        )
        self.tokens = metrics.Counter(
            "mmrag_generated_tokens_total", description="Completion tokens generated.", tag_keys=("endpoint",)
        )
        self.contexts = metrics.Counter(
            "mmrag_contexts_total", description="Items handed to the generator.", tag_keys=("endpoint", "modality")
        )
        self.retries = metrics.Counter(
            "mmrag_retries_total",
            description="Idempotent calls retried after their replica died (outcome retried), and retries that "
            "failed too (outcome failed).",
            tag_keys=("call", "outcome"),
        )

    def retry(self, call: str, outcome: str) -> None:
        if self.enabled:
            self.retries.inc(1, tags={"call": call, "outcome": outcome})

    def request(self, endpoint: str, status: int) -> None:
        if self.enabled:
            self.requests.inc(1, tags={"endpoint": endpoint, "status": str(status)})

    def stages(self, endpoint: str, timings_ms: dict[str, Any]) -> None:
        if self.enabled:
            for stage, ms in timings_ms.items():
                if isinstance(ms, int | float):
                    self.latency.observe(float(ms), tags={"endpoint": endpoint, "stage": stage})

    def generated(self, endpoint: str, tokens: int, modalities: list[str]) -> None:
        if not self.enabled:
            return
        if tokens:
            self.tokens.inc(tokens, tags={"endpoint": endpoint})
        for m in modalities:
            self.contexts.inc(1, tags={"endpoint": endpoint, "modality": m})
