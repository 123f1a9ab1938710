"""The LanceDB schema of an mmrag store.

Three tables:

``items``
    One row per searchable unit: a PDF page, an image, or a video clip.

    ========================  =========================================================================
    ``id``                    stable id: hash of (collection, source_uri, content_hash, modality, index)
    ``collection``            user-chosen namespace; every query is scoped to one
    ``doc_id``                hash of (collection, source_uri): the document a row belongs to
    ``source_uri``            where the file was read from (absolute path or object-store URI)
    ``content_hash``          sha256 of the file's bytes: a changed file gets new rows
    ``modality``              ``page`` | ``image`` | ``clip`` | ``audio`` (a stretch of an audio-only file)
    ``page``                  1-based page number (pages), else null
    ``start_s`` / ``end_s``   bounds in seconds (clips, audio items), else null
    ``frame_ts``              timestamps (s) of the frames a clip was embedded from
    ``text``                  text layer, OCR text and/or spoken words (``text_source``: pdf, ocr, speech; the first)
    ``thumbnail``             PNG bytes: page/image thumbnail or the clip's keyframe
    ``image``                 JPEG of the page / image / keyframe at ``ingest.stored_image_pixels``:
                              what the generator is shown
    ``frames``                JPEGs of a clip's sampled frames (clips), else null
    ``width`` / ``height``    pixels of the rendered page / image / frames
    ``multivector``           late-interaction embedding, one ``dim``-vector per token
    ``pooled``                mean of the multivector, L2-normalised: first-stage search
    ``n_tokens``              rows of ``multivector``
    ``tokens_i8``             the multivector quantised as the search index holds it (int8 values end to end)
    ``token_scales``          one scale per token for ``tokens_i8`` (:mod:`mmrag.store.tokens`)
    ``model_id`` / ``model_revision``  the encoder that made the vectors
    ``ingested_at``           UTC time the row was written
    ``visible``               false while its document is still being written (kill-safe ingest)
    ``context``               the document's title and the page's section headings (PDF outline)
    ``text_vectors``          dense text channel: one vector per word window of ``context`` + ``text``
    ``text_vector``           mean of ``text_vectors``, L2-normalised: the dense channel's first stage
    ``text_model_id``         the text-embedding model that made them
    ========================  =========================================================================

    ``context`` and the three ``text_*`` columns exist when a text model is configured (``models.text``); a store made
    before them gets them added (null) on the next ingest.

``documents``
    One row per (collection, source_uri) whose ingestion finished: the content hash, item and error
    counts. A file whose hash matches a finished row is skipped on re-ingest.

``ingest_errors``
    One row per file or page that could not be read, with a reason a person can act on.

``calibration``
    One row per collection: the fusion weights, fusion method and reranker weight measured on the
    collection's own probe queries (see :mod:`mmrag.calibration`), with the measurements, as JSON.
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

ITEMS = "items"
DOCUMENTS = "documents"
ERRORS = "ingest_errors"
CALIBRATION = "calibration"
API_KEYS = "api_keys"
#: The column the dense channel's vector index (LanceDB IVF) is built on, once a collection is large.
TEXT_VECTOR = "text_vector"

Modality = str  # "page" | "image" | "clip" | "audio"
MODALITIES = ("page", "image", "clip", "audio")


#: the int8 copy of the token vectors a new search replica loads instead of the float32 multivectors
TOKENS_I8 = "tokens_i8"
TOKEN_SCALES = "token_scales"
TOKEN_FIELDS = [pa.field(TOKENS_I8, pa.list_(pa.int8())), pa.field(TOKEN_SCALES, pa.list_(pa.float32()))]


def text_fields(text_dim: int) -> list[pa.Field]:
    """The dense text channel's columns for a ``text_dim``-dimensional text model."""
    tvec = pa.list_(pa.float32(), text_dim)
    return [
        pa.field("context", pa.string()),
        pa.field("text_vectors", pa.list_(tvec)),
        pa.field(TEXT_VECTOR, tvec),
        pa.field("text_model_id", pa.string()),
    ]


def items_schema(dim: int, text_dim: int | None = None) -> pa.Schema:
    """Schema of the items table for an encoder with ``dim``-dimensional token vectors (and a text model with
    ``text_dim``-dimensional ones, if any)."""
    vec = pa.list_(pa.float32(), dim)
    extra = text_fields(text_dim) if text_dim else []
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("collection", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source_uri", pa.string(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("modality", pa.string(), nullable=False),
            pa.field("page", pa.int32()),
            pa.field("start_s", pa.float64()),
            pa.field("end_s", pa.float64()),
            pa.field("frame_ts", pa.list_(pa.float64())),
            pa.field("text", pa.string()),
            pa.field("text_source", pa.string()),
            pa.field("thumbnail", pa.binary()),
            pa.field("image", pa.binary()),
            pa.field("frames", pa.list_(pa.binary())),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("multivector", pa.list_(vec)),
            pa.field("pooled", vec),
            pa.field("n_tokens", pa.int32()),
            *TOKEN_FIELDS,
            pa.field("model_id", pa.string()),
            pa.field("model_revision", pa.string()),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
            pa.field("visible", pa.bool_()),
            *extra,
        ]
    )


def text_dim_of(schema: pa.Schema) -> int | None:
    """Dimension of the stored text vectors, or None when the table has no dense text channel."""
    if TEXT_VECTOR not in schema.names:
        return None
    return schema.field(TEXT_VECTOR).type.list_size


CALIBRATION_SCHEMA = pa.schema(
    [
        pa.field("collection", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("n_items", pa.int64()),
        pa.field("fingerprint", pa.string()),
        pa.field("record", pa.string()),
    ]
)


#: API keys (:mod:`mmrag.auth.keys`): a slow hash of each key's secret, never the key.
API_KEYS_SCHEMA = pa.schema(
    [
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("collections", pa.list_(pa.string())),  # null: every collection
        pa.field("scope", pa.string(), nullable=False),
        pa.field("rate_per_s", pa.float64()),
        pa.field("tokens_per_min", pa.int64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("expires_at", pa.timestamp("us", tz="UTC")),
        pa.field("revoked_at", pa.timestamp("us", tz="UTC")),
        pa.field("secret_hash", pa.string(), nullable=False),
    ]
)


#: Collections created empty over the API (``POST /v1/collections``); a collection also exists once it holds a
#: document.
COLLECTIONS = "collections"
COLLECTIONS_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("collection", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("kind", pa.string()),
        pa.field("n_items", pa.int32()),
        pa.field("n_errors", pa.int32()),
        pa.field("model_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("collection", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("page", pa.int32()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ]
)


COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_collection(name: str) -> str:
    """Collections are plain names: letters, digits, ``_ . -``, at most 64 characters."""
    if not isinstance(name, str) or not COLLECTION_RE.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def doc_id(collection: str, source_uri: str) -> str:
    """Stable id of a document: the same file path in the same collection is the same document."""
    return hashlib.sha256(f"{collection}\x00{source_uri}".encode()).hexdigest()[:32]


def item_id(collection: str, source_uri: str, content_hash: str, modality: str, index: int) -> str:
    """Stable id of one page / image / clip of one version of a document."""
    key = f"{collection}\x00{source_uri}\x00{content_hash}\x00{modality}\x00{index}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]
