"""The serving deployments' own settings: retriever, ingestion service, reranker, generator; per-collection
calibration; video summaries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from mmrag.config.common import (
    Channel,
    FusionMethod,
    RerankerKind,
    SearchMode,
    _Strict,
    check_weights,
)
from mmrag.config.placement import DeploymentConfig


class RetrieverConfig(DeploymentConfig):
    """Query encoding and first-stage search."""

    batch_max_size: int = Field(default=16, ge=1, description="Queries encoded together (@serve.batch).")
    batch_wait_timeout_s: float = Field(
        default=0.005,
        ge=0,
        description="How long @serve.batch waits to fill a batch after its first query. Batches cut while the "
        "encoder is busy are merged into its next call anyway (mmrag.serve.coalesce), so under load batches grow "
        "without waiting; 0 adds no latency to a lone query.",
    )
    refresh_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="How often each replica checks the store for a new table version and, if there is one, builds a "
        "new search snapshot beside the one it serves (new and deleted documents show up this much later at most, "
        "plus the build).",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Split the search index over this many retriever deployments (Retriever-shard-0 ...), each "
        "holding the items whose stable id hash mod shards is its number, with its own replicas and autoscaling "
        "(these settings apply to each): for collections larger than one node's RAM. The gateway encodes the query "
        "once, searches every shard at once and merges; results equal one index's (mmrag.store.shards). 1: one "
        "Retriever deployment holding every item.",
    )
    default_mode: SearchMode = Field(default="hybrid", description="Search mode when a request names none.")
    first_stage_k: int = Field(
        default=1500,
        ge=1,
        description="Candidates from the fast pooled-vector stage. Recall@10 at 100k clustered items: 0.945 with "
        "1000, 0.977 with 2000, and 1500 keeps p50 under 50 ms on 2 cores (benchmarks/results/retrieval.md); "
        "small stores are unaffected.",
    )
    recall_target: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="When set, each replica chooses first_stage_k at load for this recall@10 (measured on "
        "pseudo-queries drawn from the collection, against the collection's own top-10; mmrag.store.calibrate) "
        "instead of using first_stage_k, and again when the collection has grown or shrunk by a quarter. 0.95 chose "
        "233 at 10k items, 1297 at 100k and 3235 at 1M, where the benchmark's queries got recall@10 0.98, 0.96 and "
        "0.95 (benchmarks/results/retrieval_1m.md). It adds to a replica's start: ~15 s at 10k-100k items, ~40 s "
        "at 1M on 2 cores.",
    )
    token_tier: Literal["ram", "disk"] = Field(
        default="ram",
        description="Where the token stage's int8 vectors live: ram, or disk (a memory-mapped file under "
        "token_dir; the replica's RAM then holds the pooled vectors, offsets and metadata only, and the page cache "
        "the touched tokens). ~11.5 KB per page: use disk for collections near a million pages per replica.",
    )
    token_dir: str | None = Field(
        default=None,
        description="Local directory for the disk token tier's (unlinked) files; null: the system temp directory.",
    )
    dense_first_stage: Literal["memory", "index"] = Field(
        default="memory",
        description="Where the dense text channel's first stage runs on large collections: `memory` (the mean "
        "vectors projected to 128 dims, in RAM: 3.5 ms p50 at 100k items) or `index` (LanceDB's vector index on "
        "text_vector, once ingestion has built it: 45 ms p50 at 100k, same recall). Both re-score the candidates "
        "by their windows (benchmarks/results/dense_ann.md).",
    )
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant for hybrid mode.")
    fusion_weights: dict[Channel, float] | None = Field(
        default=None,
        description="Explicit weights of the channels fused in hybrid mode (visual, bm25, dense), e.g. "
        "{bm25: 0.6, dense: 0.4}; a channel left out gets 0. null (the default): each collection's own "
        "calibration decides (mmrag calibrate), and uncalibrated collections use calibration.default_weights.",
    )
    fusion_method: FusionMethod | None = Field(
        default=None,
        description="How hybrid mode fuses: rrf (weighted reciprocal rank) or score (weighted sum of scores "
        "min-max normalised per channel). null: the collection's calibration decides.",
    )

    @field_validator("fusion_weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return check_weights(v)

    def index_config(self, shard: int | None = None) -> dict[str, Any]:
        """The search index's settings this config decides (``SearchIndexConfig`` fields): of the retriever holding
        ``shard`` of ``shards``; None: an index over every item (an in-process searcher)."""
        out: dict[str, Any] = {
            "first_stage_k": self.first_stage_k,
            "dense_ann": self.dense_first_stage == "index",
            "recall_target": self.recall_target,
            "token_tier": self.token_tier,
            "token_dir": self.token_dir,
        }
        if shard is not None:
            out |= {"shard_index": shard, "shard_count": self.shards}
        return out


class IngestorConfig(DeploymentConfig):
    """The ingestion service (:mod:`mmrag.serve.ingestor`): uploads and deletes over the API, with the ingestion
    stages kept loaded so a small upload is searchable in seconds. Large batches still go through ``mmrag ingest``
    (Ray Data). The service takes the store's writer lease per job, so it and ``mmrag ingest`` take turns."""

    enabled: bool = Field(
        default=True,
        description="Serve the document endpoints (POST/DELETE /v1/collections/..., GET /v1/jobs/...). Off: they "
        "answer 404 and no ingestion replica starts.",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024**2,
        ge=1,
        description="Largest upload request (all its files together); a larger one is refused with 413 while it is "
        "still arriving.",
    )
    max_files: int = Field(default=64, ge=1, description="Files per upload request.")
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list,
        description="Object-store prefixes (e.g. s3://bucket/docs/) that a JSON body may name for ingestion. Empty: "
        "none. Server-local paths and http(s) URLs are never accepted.",
    )
    staging_dir: str | None = Field(
        default=None,
        description="Where uploads wait until their job has run (default: <MMRAG_HOME>/uploads). A job whose files "
        "are still there when a replica restarts is run again.",
    )
    max_pending_jobs: int = Field(
        default=64, ge=1, description="Jobs queued per replica; beyond it uploads are answered 503 overloaded."
    )
    calibrate: bool = Field(
        default=True,
        description="Re-calibrate a collection after a job when it changed materially (as mmrag ingest does).",
    )
    optimize_every_jobs: int = Field(
        default=20,
        ge=0,
        description="Compact the store and drop old versions after this many jobs that wrote (0: never; "
        "`mmrag store optimize` does it on demand). Each small job adds fragments and versions.",
    )
    retry_wait_s: float = Field(
        default=5.0, gt=0, description="Wait before trying again when another writer (mmrag ingest) holds the store."
    )
    stats_period_s: float = Field(
        default=2.0,
        gt=0,
        description="How often each replica reports the jobs it holds, which routes uploads to the replica holding "
        "the fewest and (with autoscaling) sizes the deployment: target_ongoing_requests counts jobs per replica here.",
    )
    text_after_publish: bool = Field(
        default=True,
        description="Publish an upload's documents as soon as their pages are embedded by the visual model, and add "
        "their dense text vectors (models.text) right after: searchable by keywords and pictures seconds sooner, by "
        "the dense text channel once that step ends. Off: published only when everything is embedded.",
    )
    niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Nice value of the ingestion replicas (Linux; every thread, model thread pools included): "
        "ingestion yields the CPU to searches where they share cores; 0 keeps normal priority.",
    )

    def serve_options(self) -> dict[str, Any]:
        """Serve options plus job-aware routing and scaling (:mod:`mmrag.serve.ingest_scaling`): an upload returns
        at once, so requests in flight say nothing about this deployment's load; the jobs its replicas hold do."""
        from ray.serve.config import RequestRouterConfig

        opts = super().serve_options()
        opts["request_router_config"] = RequestRouterConfig(
            request_router_class="mmrag.serve.ingest_scaling:FewestJobsRouter",
            request_routing_stats_period_s=self.stats_period_s,
            request_routing_stats_timeout_s=max(5.0, 2 * self.stats_period_s),
        )
        if "autoscaling_config" in opts:
            opts["autoscaling_config"]["policy"] = {
                "policy_function": "mmrag.serve.ingest_scaling:jobs_autoscaling_policy"
            }
            opts["autoscaling_config"]["metrics_interval_s"] = self.stats_period_s
        return opts


class RerankerConfig(DeploymentConfig):
    """Re-scoring of candidates."""

    kind: RerankerKind = Field(default="maxsim", description="Reranker implementation.")
    candidates: int = Field(default=50, ge=1, description="Candidates re-scored per query.")
    model: str | None = Field(default=None, description="Model for model-based rerankers (id or path).")
    weight: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How much the reranker's order counts against the fused order it re-scores (1: its order "
        "alone, 0: skipped). null: each collection's calibration decides, and a reranker that did not improve the "
        "collection's probe queries is skipped.",
    )


class CalibrationConfig(_Strict):
    """Per-collection calibration of fusion weights and reranking (see mmrag.calibration)."""

    enabled: bool = Field(default=True, description="Calibrate collections after ingestion when they changed.")
    probes: int = Field(default=200, ge=10, description="Pseudo-queries drawn from the collection's own items.")
    min_probes: int = Field(
        default=20, ge=5, description="Fewer usable probe queries than this: the collection stays uncalibrated."
    )
    seed: int = Field(default=0, description="Seed of the probe sampling (calibration is deterministic).")
    refresh_growth: float = Field(
        default=0.2,
        ge=0,
        description="Re-calibrate when the collection has grown or shrunk by this fraction of its items since the "
        "last calibration (or a model changed).",
    )
    grid_step: float = Field(default=0.1, gt=0, le=0.5, description="Step of the weight grid searched.")
    chance_z: float = Field(
        default=3.0,
        ge=0,
        description="A channel whose probe MRR@10 is not this many standard errors above a random ranking's gets "
        "weight 0.",
    )
    min_gain: float = Field(
        default=0.005,
        ge=0,
        description="nDCG@10 a channel or the reranker must add on the probe set to be used at all (cheaper "
        "settings win ties).",
    )
    rerank_probes: int = Field(default=100, ge=1, description="Probe queries used to measure the reranker.")
    default_weights: dict[Channel, float] = Field(
        default_factory=lambda: {"bm25": 0.7, "dense": 0.3},
        description="Fusion weights of a collection that has no calibration (too little text to draw probes); BM25 "
        "leads, as it did on every real query set we measured.",
    )

    @field_validator("default_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        out = check_weights(v)
        assert out is not None
        return out


class GeneratorConfig(DeploymentConfig):
    """The vLLM generator deployment."""

    engine: Literal["vllm", "echo", "none"] = Field(
        default="vllm",
        description="vllm for real serving; echo is the deterministic debug engine; none deploys no generator "
        "(search only: /v1/answer and /v1/chat/completions answer 503).",
    )
    stream_batching_ms: float = Field(
        default=0.0,
        ge=0,
        description="Ray Serve LLM sends a stream's tokens in batches gathered over this many ms (its default is "
        "50). Every batch, the first included, waits up to this long: lower is a shorter time to first token, "
        "higher is less per-token messaging under load; 0 sends every token alone.",
    )
    contexts: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Ranked items handed to the generator per answer (the default k of /v1/answer); the first "
        "models.generator.max_images_per_prompt of them go in as images, all with their text as far as it fits.",
    )
    max_request_tokens: int | None = Field(
        default=None,
        ge=1,
        description="The most tokens a request may ask the answer to have (max_tokens); None: half of "
        "models.generator.max_model_len. Requests asking for more are 400s.",
    )
    allow_ignore_eos: bool = Field(
        default=False,
        description="Whether chat requests may pass ignore_eos to vLLM (generate max_tokens whatever the model "
        "says): load tools want it, but a few such requests near the token limit hold the engine. Off: a 400.",
    )
    max_min_tokens: int = Field(
        default=0, ge=0, description="The largest min_tokens a chat request may pass to vLLM (0: none allowed)."
    )


class SummaryConfig(_Strict):
    """Video summaries (``POST /v1/videos/{doc_id}/summary``, ``mmrag summarize``): chapters from groups of
    consecutive clips, each summarised by the generator (map), then one summary of the chapters (reduce)."""

    min_clips_per_chapter: int = Field(
        default=2,
        ge=1,
        description="Consecutive clips per chapter at least (a video with fewer clips is one chapter); a longer "
        "video gets more clips per chapter so that it never has more than max_chapters.",
    )
    max_chapters: int = Field(
        default=8,
        ge=1,
        le=64,
        description="The most chapters (generator calls of the map step) one video gets, however long it is.",
    )
    concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Chapter summaries generated at once for one request (the generator batches them); keep it at "
        "or below the generator's max_ongoing_requests.",
    )
    chapter_tokens: int = Field(default=48, ge=1, description="Longest chapter summary, in tokens.")
    summary_tokens: int = Field(default=96, ge=1, description="Longest overall summary, in tokens.")
    frames_per_chapter: int = Field(
        default=2,
        ge=0,
        le=16,
        description="Clip frames shown to a vision-language generator per chapter (evenly spread; capped by "
        "models.generator.max_images_per_prompt); a text-only generator reads the clips' text alone.",
    )
    cache: bool = Field(
        default=True,
        description="Keep each summary in the store (table video_summaries), keyed by the video's content hash, the "
        "generator model and the prompt version: re-ingesting a changed video or deleting it invalidates it.",
    )
