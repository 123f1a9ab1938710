"""The HTTP server: host, port, limits, keys, stops; and admission control under overload."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmrag.config.common import (
    _Strict,
)


class AdmissionConfig(_Strict):
    """Admission control per gateway replica (:mod:`mmrag.serve.admission`): under overload, refuse at once (503 +
    Retry-After) what could not be served within the SLO, instead of letting every request time out."""

    enabled: bool = Field(
        default=True,
        description="Off: every request is queued, however long the queue. On, the gateway deployment's "
        "max_ongoing_requests is raised to 4096 so that Serve does not queue requests ahead of the gates.",
    )
    search_slo_ms: float = Field(
        default=1000.0,
        gt=0,
        description="Latency SLO of /v1/search: the in-flight limit is the measured capacity times 0.4 of this "
        "(the queue's share; the tail gets the rest).",
    )
    generate_slo_ms: float = Field(
        default=30_000.0,
        gt=0,
        description="Latency SLO of /v1/answer and /v1/chat/completions (the whole response).",
    )
    initial_inflight: int = Field(
        default=64, ge=1, description="In-flight limit per group until the first saturated second measured one."
    )
    min_inflight: int = Field(default=2, ge=1, description="The limit never goes below this.")
    max_inflight: int | None = Field(
        default=None,
        ge=1,
        description="A fixed in-flight limit per group instead of the measured one (None: measured).",
    )


class ServerConfig(_Strict):
    """The HTTP front door."""

    host: str = Field(default="127.0.0.1", description="Address the HTTP proxy binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    route_prefix: str = Field(default="/", pattern=r"^/", description="Route prefix of the app.")
    max_query_chars: int = Field(default=4096, ge=1, description="Longest accepted query.")
    max_k: int = Field(default=100, ge=1, description="Largest k a request may ask for.")
    max_query_image_bytes: int = Field(
        default=8 * 1024**2,
        ge=1024,
        description="Largest image a question may carry (/v1/search, /v1/answer, chat image_url parts), decoded "
        "bytes; the JSON body of such a request may be 4/3 of this plus 64 KiB (base64).",
    )
    max_query_image_pixels: int = Field(
        default=40_000_000,
        ge=10_000,
        description="Largest image a question may carry, in pixels, checked from its header before it is decoded "
        "(a decompression bomb is refused unread); it is then scaled to models.retriever.max_image_pixels.",
    )
    retry_deadline_s: float = Field(
        default=5.0,
        ge=0,
        description="A search step (retrieval, query encoding, reranking) or job lookup whose replica died under it "
        "is retried once on another replica if its start was less than this long ago (mmrag.serve.retries); "
        "generation, uploads and deletes never are. 0: no retries.",
    )
    auth: Literal["none", "required"] = Field(
        default="none",
        description="required: every request but /healthz and the API docs carries `Authorization: Bearer KEY` "
        "(keys from `mmrag keys create`, scoped to collections); a missing or bad key is 401, a collection outside "
        "the key's is 404 as if it did not exist. none: anyone who reaches the port reads every collection "
        "(`mmrag serve` warns when that port is not on loopback). The gpu profile and the k8s manifests require it.",
    )
    admin_key_env: str | None = Field(
        default="MMRAG_ADMIN_KEY",
        description="With auth required: an environment variable of the gateway's process whose value, when set, "
        "is a key for every collection with the admin scope (the k8s manifests fill it from a Secret). Compared "
        "by hash in constant time; None turns it off.",
    )
    key_refresh_s: float = Field(
        default=2.0,
        gt=0,
        le=5.0,
        description="How often a gateway replica re-reads the key table in the background; a request never uses a "
        "copy older than 5 s, so a revoked or expired key stops working on every replica within 5 s.",
    )
    audit_log: bool = Field(
        default=True,
        description="One JSON line per request on the `mmrag.audit` logger (the replica's log): time, key id, "
        "method, path, collection, status, latency. Never the key; the query only with audit_queries.",
    )
    audit_queries: bool = Field(default=False, description="Also write each request's query text in the audit line.")
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig, description="Load shedding under overload.")
    prompt_cache_items: int = Field(
        default=512,
        ge=0,
        description="Sources whose text and prompt-ready image the gateway keeps in memory, by item id (ids hash "
        "the content, so an entry is never stale). Saves the store round trip and image resizing on the answer "
        "path for pages asked about again; 0 turns it off.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of Ray's Prometheus exporter when mmrag starts Ray itself (Ray Serve's metrics and "
        "mmrag_* per-stage metrics, at /metrics); None lets Ray pick a free one (`mmrag serve` prints it). On a "
        "cluster, `ray start --metrics-export-port` sets it.",
    )
    ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="How HTTP reaches the gateway. haproxy: Ray Serve's throughput-optimized mode "
        "(RAY_SERVE_ENABLE_HA_PROXY=1, RAY_SERVE_THROUGHPUT_OPTIMIZED=1): HAProxy (shipped with ray[serve] on Linux) "
        "forwards straight to the gateway replica's own HTTP server and replicas call each other over gRPC; on 2 "
        "cores it doubled /v1/search throughput and cut ~20 ms off the time to first token "
        "(benchmarks/results/search_http.md, answer.md). proxy: Ray Serve's Python HTTP proxy actor. These are "
        "environment variables of the Ray processes, so they apply when mmrag starts Ray itself; a cluster sets "
        "them where it starts Ray (the k8s/ manifests do), and the variables already in the environment win.",
    )
    drain_s: float = Field(
        default=30.0,
        ge=0,
        description="With ingress haproxy: how long a stopping gateway replica keeps answering so that load "
        "balancers stop sending to it first (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S). Every shutdown "
        "waits this long; local-cpu, with nothing in front of it, sets 1.",
    )
    stop_timeout_s: float = Field(
        default=8.0,
        gt=0,
        le=600,
        description="`mmrag serve` and `mmrag demo` on Ctrl-C or SIGTERM: how long the app and the local Ray get to "
        "shut down gracefully (Serve's shutdown, then Ray's). Then whatever is still running, and everything they "
        "started (HAProxy, vLLM's engine), gets SIGTERM and, 2.5 s later, SIGKILL (mmrag.lifetime): the whole stop "
        "takes at most this + 5 s (13 s by default). A server that is killed outright (SIGKILL) is cleaned up the "
        "same way by its reaper process.",
    )

    control_loop_interval_s: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="How often Ray Serve's controller runs its control loop (RAY_SERVE_CONTROL_LOOP_INTERVAL_S; "
        "Ray's default 0.1). Longer: less idle CPU, and the controller notices dead replicas and acts on "
        "autoscaling decisions that much later. local-cpu sets 0.5 (see metrics_export_interval_ms).",
    )
    metrics_export_interval_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description="How often every replica and handle flushes its cached Ray Serve metrics "
        "(RAY_SERVE_METRICS_EXPORT_INTERVAL_MS; Ray's default 100; 0 exports each one at once). Prometheus scrapes "
        "far less often. local-cpu sets 1000: on 2 cores an idle app's Ray slowed bare vLLM's time to first token "
        "by ~10 ms, and with these two settings (and ingestion's Ray Data actors gone) by ~6 ms "
        "(benchmarks/results/answer.md).",
    )

    worker_niceness: int = Field(
        default=15,
        ge=0,
        le=19,
        description="Nice value of Ray's worker processes, which run the replicas and the vLLM engine they spawn "
        "(RAY_worker_niceness; Ray's default 15, while Ray's own daemons run at 0 so that busy workers never "
        "starve them). On a machine this small the daemons then win the CPU from the answer path whenever they "
        "wake: local-cpu sets 0 (in one paired run the answer TTFT excess fell from 19.6 to 14.7 ms; "
        "benchmarks/results/answer.md).",
    )

    def ray_env(self) -> dict[str, str]:
        """Environment variables the Ray processes need for this ``ingress``, these intervals and this niceness (see
        :func:`mmrag.runtime.init_ray`)."""
        env = {
            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": f"{self.control_loop_interval_s:g}",
            "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": str(self.metrics_export_interval_ms),
            "RAY_worker_niceness": str(self.worker_niceness),
        }
        if self.ingress == "proxy":
            return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", **env}
        return {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{self.drain_s:g}",
            **env,
        }
