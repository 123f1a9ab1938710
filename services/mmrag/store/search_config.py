"""The search index's settings (:class:`SearchIndexConfig`) and its error (:class:`SearchError`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmrag.store.cascade import TokenStore
from mmrag.store.fusion import FusionMethod


class SearchError(ValueError):
    """A search that cannot run as asked; the message says what to change."""


class SearchIndexConfig(BaseModel):
    """Stage sizes and memory layout of a :class:`SearchIndex`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_stage_k: int = Field(
        default=1500,
        ge=1,
        description="Candidates kept by the pooled-vector stage; the token stage's cost grows linearly with it. "
        "Recall@10 at 100k clustered items: 0.945 with 1000, 0.977 with 2000, 0.992 with 4000; 1500 keeps "
        "p50 under 50 ms there on 2 cores (benchmarks/results/retrieval.md).",
    )
    exact_k: int = Field(
        default=20,
        ge=1,
        description="Candidates re-scored with exact float32 MaxSim (multivectors fetched from LanceDB). The int8 "
        "token stage ranks almost exactly: recall@10 was the same with 20, 40 and 80 at 10k and 100k items.",
    )
    token_store: TokenStore = Field(
        default="int8",
        description="How token vectors are held in RAM for the token stage: int8 (1 byte per value plus one float "
        "scale per token), float16, or none (no token stage: the first stage's candidates go straight to the "
        "exact stage, so keep first_stage_k small; for tiny stores or very little RAM).",
    )
    pooled_store: Literal["float16", "float32"] = Field(
        default="float16",
        description="How the pooled vectors are held for the first stage. float16 halves their RAM (244 MB at 1M "
        "items) and the stage's time, which is a memory-bound mat-vec: 23 ms vs 66 ms over 1M x 128 on one core "
        "of this machine (torch's float32 mat-vec is the slow one), and kept 99.9% of float32's top 3000.",
    )
    token_tier: Literal["ram", "disk"] = Field(
        default="ram",
        description="Where the token stage's vectors live: ram (anonymous memory), or disk (a memory-mapped, "
        "unlinked file under token_dir: the process holds only the pooled vectors, offsets and metadata; the "
        "kernel's page cache keeps the touched pages). At 1M pages the int8 tokens are ~11.5 GB: use disk there "
        "(benchmarks/results/retrieval_1m.md).",
    )
    token_dir: str | None = Field(
        default=None,
        description="Directory for the disk token tier's files, on local disk (None: the system's temporary "
        "directory). The files are unlinked once mapped; they need ~128 bytes + 4 per token of free space.",
    )
    backend: Literal["auto", "torch", "numpy"] = Field(
        default="auto",
        description="Library for the scoring maths: auto is torch when installed. All three stages use the same "
        "one: interleaving numpy's BLAS threads with torch's made the token stage 2-4x slower on 2 cores.",
    )
    token_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads scoring token blocks in parallel. None: one per CPU when torch itself runs on one "
        "thread (a Ray replica), else 1 (torch parallelises each op). Many small parallel ops made the token stage "
        "5x slower on a loaded 2-core machine (each OpenMP barrier waits for a preempted thread); threads that pull "
        "blocks from a queue do not wait for each other.",
    )
    recall_target: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="When set, first_stage_k is not taken as given: each full load measures, on the collection "
        "itself, the pooled depth that keeps this share of pseudo-queries' top-10 (by token MaxSim, in the whole "
        "collection) and uses an upper confidence bound of it (mmrag.store.calibrate; recorded in the snapshot's "
        "`loaded`); it is measured again when the collection has grown or shrunk by a quarter. A query's own "
        "first_stage_k still wins. 0.95 chose 3096-4096 at 1M items, where the benchmark's queries needed 3000 "
        "(benchmarks/results/retrieval_1m.md).",
    )
    calibration_shortlist: int = Field(
        default=16384,
        ge=100,
        description="Pooled shortlist each calibration pseudo-query's top-10 is searched for in (by token MaxSim); "
        "a query whose top-10 reach past half of it is measured again with one four times deeper. Its cost is "
        "linear in this.",
    )
    calibration_max_shortlist: int = Field(
        default=262144,
        ge=100,
        description="Deepest shortlist the recall calibration tries; queries that needed more are counted "
        "(`capped_queries`) and the size chosen may then be too small.",
    )
    calibration_queries: int = Field(
        default=64,
        ge=4,
        description="Pseudo-queries the recall calibration draws. The depths their top-10 sit at are heavy-tailed: "
        "at 1M items 24 queries chose anywhere from 1500 to 4600 (seeds 0-3); 64 chose 3100-4100. Its cost is "
        "linear in this (~50 s for 64 at 1M items on 2 cores, ~10 s at 100k).",
    )
    calibration_query_tokens: int = Field(
        default=20, ge=1, description="Tokens per calibration pseudo-query, drawn from one stored item's tokens."
    )
    calibration_noise: float = Field(
        default=1.0,
        ge=0.0,
        description="Gaussian noise added to a pseudo-query's tokens before L2-normalising, as a norm relative to "
        "a unit token (spread dim-wise): stands for the gap between a text query and the page it finds. 1.0 leaves "
        "a cosine of ~0.7 between a pseudo-query token and its source token, about the best-patch similarity of a "
        "relevant page's query tokens under ColPali-family models. More noise, deeper first stage (2.0 chose "
        "9000 at 1M items where 3000 met the target on benchmarks/retrieval.py's queries).",
    )
    calibration_seed: int = Field(default=0, description="Seed of the calibration's sampling (reproducible sizes).")
    fusion_depth: int = Field(default=50, ge=1, description="Hits taken from each ranking before hybrid fusion.")
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant.")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"bm25": 0.7, "dense": 0.3},
        description="Channel weights of hybrid search when a query names none (callers pass the collection's "
        "calibrated weights; see mmrag.calibration).",
    )
    fusion: FusionMethod = Field(default="rrf", description="Fusion method when a query names none.")
    dense_first_stage_k: int = Field(
        default=300,
        ge=1,
        description="Dense text channel on large collections: items kept by the mean-vector stage before their "
        "windows are scored.",
    )
    dense_exact_rows: int = Field(
        default=5000,
        ge=1,
        description="Up to this many candidate items, the dense channel scores every window (no first stage).",
    )
    dense_ann: bool = Field(
        default=False,
        description="Take the dense channel's first stage from LanceDB's vector index on `text_vector` when the "
        "table has one (ingestion builds it once a collection is large: store.text_ann_min_rows) instead of from "
        "the projected mean vectors in RAM. Off by default: at 100k items the index's stage was 13x slower at the same "
        "recall (benchmarks/results/dense_ann.md).",
    )
    dense_ann_nprobes: int = Field(default=20, ge=1, description="IVF partitions the dense first stage probes.")
    dense_ann_refine_factor: int | None = Field(
        default=None,
        ge=1,
        description="Re-rank this many times dense_first_stage_k of the index's candidates by their full vectors "
        "(None: no refine; the window stage re-scores the candidates anyway).",
    )
    snippet_chars: int = Field(default=300, ge=0, description="Characters of an item's text returned in a hit.")
    max_query_terms: int = Field(default=64, ge=1, description="Distinct words of a text query passed to BM25.")
    incremental_max_new: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="A refresh fetches only the new items by row id unless more than this share of the visible items "
        "is new; then it loads in full, streaming every multivector in one scan (cheaper than many takes).",
    )
    load_batch_rows: int = Field(default=1024, ge=1, description="Rows per batch when reading multivectors.")
    fetch_chunk_rows: int = Field(default=2048, ge=1, description="Row ids per LanceDB take while loading.")
    shard_count: int = Field(
        default=1,
        ge=1,
        description="Shards the items are split over (retriever.shards); this index loads only its own shard's items "
        "(mmrag.store.shards.shard_of). 1: every item.",
    )
    shard_index: int = Field(
        default=0, ge=0, description="Which shard this index holds, 0 <= shard_index < shard_count."
    )

    @model_validator(mode="after")
    def _shard_in_range(self) -> SearchIndexConfig:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} is not below shard_count {self.shard_count}")
        return self


__all__ = ["SearchError", "SearchIndexConfig"]
