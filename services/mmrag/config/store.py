"""Where the store lives and how its one writer is kept one."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from mmrag.config.common import (
    COLLECTION_PATTERN,
    _Strict,
    expand_path,
)


# --------------------------------------------------------------------------------------- store
class StoreWriterConfig(_Strict):
    """The one-writer lease (:mod:`mmrag.store.lease`) and upkeep (``mmrag store optimize``) of a store."""

    lease_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a writer's lease lasts unless renewed: a crashed writer blocks others this long at most.",
    )
    lease_renew_s: float = Field(
        default=15.0, gt=0, description="How often a running writer renews its lease (well below lease_ttl_s)."
    )
    optimize_after_ingest: bool = Field(
        default=True,
        description="Compact fragments, fold new rows into indexes and remove old versions after an ingest run "
        "that wrote something (what `mmrag store optimize` does).",
    )
    keep_versions_s: float = Field(
        default=3600.0,
        ge=0,
        description="Old table versions are removed once superseded for this long: longer than any query or "
        "reader may stay on one version (a reader with read_consistency_s: null must reopen within it).",
    )

    @model_validator(mode="after")
    def _renew_below_ttl(self) -> StoreWriterConfig:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"store.writer.lease_renew_s ({self.lease_renew_s}) must be at most half of lease_ttl_s "
                f"({self.lease_ttl_s}) so that one missed renewal does not lose the lease; lower it"
            )
        return self


class StoreConfig(_Strict):
    """Where the LanceDB tables live."""

    uri: str = Field(
        default="${MMRAG_HOME}/lancedb",
        description="LanceDB URI: a local directory, or an object-store URI (s3://, gs://, az://) "
        "that every ingestion worker and serving replica can reach.",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Object-store options passed to lancedb.connect (region, endpoint, ...). "
        "Keep credentials in the environment, not here.",
    )
    read_consistency_s: float | None = Field(
        default=0.0,
        ge=0,
        description="How stale a reader's view of a table may get, in seconds: 0 sees every write at once "
        "(one version check per read); null never re-checks (fastest; reopen to see new data).",
    )
    default_collection: str = Field(
        default="default",
        pattern=COLLECTION_PATTERN,
        description="Collection used when a request or ingest names none.",
    )
    text_ann_min_rows: int = Field(
        default=100_000,
        ge=0,
        description="Ingestion builds a vector index (IVF-PQ, cosine) on the dense text vectors once the items "
        "table holds this many rows with text vectors, and rebuilds it when a fifth of them are not in it (~1-3 min "
        "per 100k rows on 2 cores). Search uses it when retriever.dense_first_stage is `index`. 0: never.",
    )
    writer: StoreWriterConfig = Field(
        default_factory=StoreWriterConfig, description="One writer at a time (a lease in the store) and upkeep."
    )

    @field_validator("uri")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)
