"""The Ray Data stages of ingestion, as callable classes (``__init__`` once, ``__call__`` per batch).

Rows between stages share one Arrow schema (:data:`STREAM_SCHEMA`) with a ``kind`` column:

* ``item``  a page, image or clip: encoder-sized frames (raw RGB), stored JPEGs, thumbnail, text;
* ``error`` a file or page that could not be read, with the reason;
* ``end``   the last row of a file: how many items and errors it produced, so the driver can tell
  when all of a document's rows have arrived, in whatever order Ray Data delivers them.

Where each stage runs (CPUs, GPUs, actor count, batch size) is decided where the pipeline is built
(:mod:`mmrag.ingest.pipeline`), not here.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from mmrag.imaging import fit_pixels

log = logging.getLogger(__name__)

STREAM_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("collection", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("content_hash", pa.string()),
        # where the file can be read (a staged upload's temporary path): the transcription stage reads it again
        pa.field("path", pa.string()),
        pa.field("doc_kind", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("index", pa.int32()),
        pa.field("page", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("frame_ts", pa.list_(pa.float64())),
        pa.field("text", pa.string()),
        pa.field("text_source", pa.string()),
        pa.field("context", pa.string()),
        pa.field("thumbnail", pa.binary()),
        pa.field("image", pa.binary()),
        pa.field("frames", pa.list_(pa.binary())),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        # encoder input: raw RGB bytes of each frame, all frames of a row share (enc_h, enc_w)
        pa.field("enc_frames", pa.list_(pa.large_binary())),
        pa.field("enc_w", pa.int32()),
        pa.field("enc_h", pa.int32()),
        pa.field("reason", pa.string()),
        pa.field("n_items", pa.int32()),
        pa.field("n_errors", pa.int32()),
        pa.field("read_s", pa.float64()),
    ]
)


def embedded_fields(dim: int) -> list[pa.Field]:
    """Columns EmbedStage adds; vectors are fixed-size lists of the encoder's dimension, as the store keeps them."""
    vec = pa.list_(pa.float32(), dim)
    return [
        pa.field("multivector", pa.list_(vec)),
        pa.field("pooled", vec),
        pa.field("n_tokens", pa.int32()),
        pa.field("embed_s", pa.float64()),
    ]


def _jpeg(img: Any, max_pixels: int, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    fit_pixels(img, max_pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=STREAM_SCHEMA)


class ReadStage:
    """Decode files into items: render PDF pages, load images, sample clip frames; OCR where needed.

    Input rows: ``collection``, ``source_uri`` (the document), ``path`` (where to read it, when that differs: a
    staged upload), ``content_hash``, ``doc_kind``. Output: stream rows,
    yielded ``rows_per_table`` at a time (the pipeline passes the embed batch size and lets each table
    become its own block), so embedding starts after the first few pages of a document, not after the
    whole document, and a 700-page PDF never sits in memory whole.

    ``read_s`` on each row is the time this stage spent producing it; the time a consumer holds a
    yielded table (Ray Data's back-pressure) is not counted.
    """

    def __init__(self, ingest_cfg: dict[str, Any], encoder_pixels: int, rows_per_table: int = 4) -> None:
        from mmrag.config import IngestConfig

        self.cfg = IngestConfig.model_validate(ingest_cfg)
        self.encoder_pixels = encoder_pixels
        self.rows_per_table = rows_per_table
        # nothing downstream keeps more pixels of a page than the stored JPEG (OCR'd pages excepted)
        self.render_pixels = max(self.cfg.stored_image_pixels, encoder_pixels)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for doc in batch.to_pylist():
            yield from self._read_one(doc)

    def _read_one(self, doc: dict[str, Any]) -> Iterator[pa.Table]:
        from mmrag.ingest import readers
        from mmrag.ingest.sources import local_path

        base = {k: doc[k] for k in ("collection", "source_uri", "content_hash", "doc_kind")}
        base["path"] = doc.get("path") or doc["source_uri"]
        n_items = n_errors = 0
        pending: list[dict[str, Any]] = []
        resumed = time.perf_counter()  # busy time runs from here to the next yield
        try:
            with local_path(doc.get("path") or doc["source_uri"]) as path:
                records = readers.read_any(path, self.cfg, kind=doc["doc_kind"], render_pixels=self.render_pixels)
                for rec in records:
                    if isinstance(rec, readers.DecodeError):
                        pending.append({**base, "kind": "error", "page": rec.page, "reason": rec.reason})
                        n_errors += 1
                    else:
                        pending.append({**base, **self._item_row(rec, n_items)})
                        n_items += 1
                    if len(pending) >= self.rows_per_table:
                        yield _timed_table(pending, time.perf_counter() - resumed)
                        pending = []
                        resumed = time.perf_counter()
        except Exception as e:  # a reader bug or a library crash on a hostile file must not stop the job
            log.exception("reading %s failed", doc["source_uri"])
            pending.append({**base, "kind": "error", "reason": f"could not be read: {type(e).__name__}: {e}"})
            n_errors += 1
        pending.append({**base, "kind": "end", "n_items": n_items, "n_errors": n_errors})
        yield _timed_table(pending, time.perf_counter() - resumed)

    def _item_row(self, rec: Any, index: int) -> dict[str, Any]:
        from mmrag.ingest import readers
        from mmrag.ingest.common import wants_ocr

        images = rec.images
        key = rec.keyframe
        text = rec.text or ""
        text_source = rec.text_source
        if wants_ocr(self.cfg, text):
            ocr_text = readers.ocr_image(key, self.cfg.ocr_lang)
            if ocr_text.strip():
                text = f"{text}\n{ocr_text}".strip()
                text_source = "ocr" if text_source is None else text_source
        enc = [np.asarray(fit_pixels(im, self.encoder_pixels)) for im in images]
        h, w = enc[0].shape[:2]
        enc = [
            e if e.shape[:2] == (h, w) else np.asarray(images[i].convert("RGB").resize((w, h), reducing_gap=1.0))
            for i, e in enumerate(enc)
        ]
        return {
            "kind": "item",
            "modality": rec.modality,
            "index": rec.index,
            "page": rec.page,
            "start_s": rec.start_s,
            "end_s": rec.end_s,
            "frame_ts": list(rec.frame_ts) if rec.frame_ts is not None else None,
            "text": text,
            "text_source": text_source,
            "context": rec.context or _file_title(rec.source),
            "thumbnail": rec.thumbnail_png,
            "image": _jpeg(key, self.cfg.stored_image_pixels),
            "frames": [_jpeg(im, self.cfg.stored_image_pixels // 4) for im in images]
            if rec.modality == "clip"
            else None,
            "width": rec.width,
            "height": rec.height,
            "enc_frames": [e.tobytes() for e in enc],
            "enc_w": w,
            "enc_h": h,
        }


def _file_title(source: str) -> str:
    """A file's name without folders and extension, words split: the context of items of files without a title."""
    import os

    stem = os.path.splitext(os.path.basename(source.rstrip("/")))[0]
    return stem.replace("_", " ").replace("-", " ").strip() or stem


def _timed_table(rows: list[dict[str, Any]], busy_s: float) -> pa.Table:
    """Rows as a table, ``busy_s`` spread over its items (over its last row when it has no item)."""
    items = [r for r in rows if r["kind"] == "item"] or rows[-1:]
    for r in items:
        r["read_s"] = busy_s / len(items)
    return _rows_table(rows)


def set_torch_threads(threads: int | None) -> None:
    """Give this process's torch ``threads`` intra-op threads (None: leave Ray's OMP_NUM_THREADS-derived default)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


class EmbedStage:
    """Embed items with the ColPali-family encoder; a clip's multivector is built from its frames.

    A clip's frames are embedded together and their token vectors concatenated (optionally pooled
    with ``token_pooling_factor``), so MaxSim against a clip looks at every sampled frame.

    Columns pass through as Arrow (the stored JPEGs and thumbnails are never copied into Python objects)
    and the vectors go from numpy straight into fixed-size-list arrays. ``embed_s`` is the whole call's
    time spread over the batch's items.
    """

    def __init__(
        self, models_cfg: dict[str, Any], token_pooling_factor: int = 1, batch_size: int = 4, threads: int | None = None
    ) -> None:
        from mmrag.config import ModelsConfig
        from mmrag.models.encoder import ColPaliEncoder

        set_torch_threads(threads)

        self.encoder = ColPaliEncoder.from_config(ModelsConfig.model_validate(models_cfg), batch_size=batch_size)
        self.pool_factor = token_pooling_factor

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        kinds = batch.column("kind").to_pylist()
        images, owners = _decode_frames(batch, kinds)
        vecs: list[np.ndarray] = []
        error: str | None = None
        if images:
            try:
                vecs = self.encoder.embed_images(images)
            except Exception as e:
                log.exception("embedding a batch failed; embedding its items one by one")
                error = f"{type(e).__name__}: {e}"
        per_item: dict[int, list[np.ndarray]] = {}
        if error is None:
            for owner, v in zip(owners, vecs, strict=True):
                per_item.setdefault(owner, []).append(v)
        else:
            per_item = self._one_by_one(images, owners)

        reasons = batch.column("reason").to_pylist()
        mvs: list[np.ndarray | None] = [None] * batch.num_rows
        for i, kind in enumerate(kinds):
            if kind != "item":
                continue
            parts = per_item.get(i)
            if not parts:
                kinds[i], reasons[i] = "error", "the encoder could not embed this item"
                continue
            mv = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
            if self.pool_factor > 1:
                mv = pool_tokens(mv, self.pool_factor)
            mvs[i] = mv
        dim = next((m.shape[1] for m in mvs if m is not None), self.encoder.dim)
        out = batch.drop_columns(["enc_frames", "enc_w", "enc_h"])
        out = out.set_column(out.schema.get_field_index("kind"), "kind", pa.array(kinds, pa.string()))
        out = out.set_column(out.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
        multivector, pooled, n_tokens = vectors_to_arrow(mvs, dim)
        n_done = sum(m is not None for m in mvs)
        each = (time.perf_counter() - t0) / max(1, n_done)
        embed_s = pa.array([each if m is not None else None for m in mvs], pa.float64())
        for f, col in zip(embedded_fields(dim), (multivector, pooled, n_tokens, embed_s), strict=True):
            out = out.append_column(f, col)
        return out

    def _one_by_one(self, images: list[Any], owners: list[int]) -> dict[int, list]:
        per_item: dict[int, list[np.ndarray]] = {}
        failed: set[int] = set()
        for owner, img in zip(owners, images, strict=True):
            if owner in failed:
                continue
            try:
                per_item.setdefault(owner, []).extend(self.encoder.embed_images([img]))
            except Exception:
                failed.add(owner)
                per_item.pop(owner, None)
        return per_item


def text_fields_stream(text_dim: int) -> list[pa.Field]:
    """Columns TextEmbedStage adds (as the store keeps them, see :func:`mmrag.store.schema.text_fields`)."""
    from mmrag.store.schema import text_fields

    added = [f for f in text_fields(text_dim) if f.name != "context"]  # the reader already set ``context``
    return [*added, pa.field("text_embed_s", pa.float64())]


class TextEmbedStage:
    """Embed each item's text with the dense text model: one vector per word window, plus their mean.

    Items without text get nulls (the dense channel cannot find them; the visual channel and BM25 still can).
    A model failure on a batch is logged and leaves the batch's text vectors null rather than failing the
    documents: the text channel is an extra, the item is still searchable.
    """

    def __init__(self, text_cfg: dict[str, Any], threads: int | None = None) -> None:
        from mmrag.config import TextModelConfig
        from mmrag.models.text_encoder import TextEncoder

        set_torch_threads(threads)

        self.cfg = TextModelConfig.model_validate(text_cfg)
        self.encoder = TextEncoder.from_config(self.cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mmrag.models.text_encoder import mean_vector

        t0 = time.perf_counter()
        kinds = batch.column("kind").to_pylist()
        texts = batch.column("text").to_pylist()
        contexts = batch.column("context").to_pylist()
        wanted = [t if k == "item" else None for k, t in zip(kinds, texts, strict=True)]
        ctx = [c if k == "item" else None for k, c in zip(kinds, contexts, strict=True)]
        try:
            vecs = self.encoder.embed_items(wanted, ctx)
        except Exception:
            log.exception("text embedding failed for a batch; its items get no text vectors")
            vecs = [None] * len(wanted)
        dim = self.cfg.dim
        chunks, _, _ = vectors_to_arrow(vecs, dim)
        means = [None if v is None else mean_vector(v) for v in vecs]
        flat = np.concatenate([m if m is not None else np.zeros(dim, np.float32) for m in means]) if means else []
        mean_arr = pa.FixedSizeListArray.from_arrays(
            pa.array(flat, pa.float32()), dim, mask=pa.array([m is None for m in means], pa.bool_())
        )
        model = pa.array([self.cfg.model if v is not None else None for v in vecs], pa.string())
        n_done = max(1, sum(v is not None for v in vecs))
        each = (time.perf_counter() - t0) / n_done
        secs = pa.array([each if v is not None else None for v in vecs], pa.float64())
        out = batch
        for f, col in zip(text_fields_stream(dim), (chunks, mean_arr, model, secs), strict=True):
            out = out.append_column(f, col)
        return out


def _decode_frames(batch: pa.Table, kinds: list[str]) -> tuple[list[Any], list[int]]:
    """PIL views of each item's raw encoder frames (no copy of the pixel buffers) and the row each belongs to."""
    frames = batch.column("enc_frames").combine_chunks()
    widths = batch.column("enc_w").to_pylist()
    heights = batch.column("enc_h").to_pylist()
    images: list[Any] = []
    owners: list[int] = []
    for i, kind in enumerate(kinds):
        if kind != "item":
            continue
        for raw in frames[i].values:
            arr = np.frombuffer(raw.as_buffer(), dtype=np.uint8).reshape(heights[i], widths[i], 3)
            images.append(Image.fromarray(arr))
            owners.append(i)
    return images, owners


def vectors_to_arrow(mvs: list[np.ndarray | None], dim: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(multivector, pooled, n_tokens) columns from per-row ``[n_tokens, dim]`` arrays; None rows are null.

    ``pooled`` is the L2-normalised mean token. The float buffers go to Arrow without a Python list in between.
    """
    n = len(mvs)
    present = [m for m in mvs if m is not None]
    lengths = np.array([0 if m is None else m.shape[0] for m in mvs], dtype=np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(present).reshape(-1) if present else np.zeros(0, np.float32)
    null = pa.array([m is None for m in mvs], pa.bool_())
    tokens = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    multivector = pa.ListArray.from_arrays(pa.array(offsets), tokens, mask=null)
    pooled = np.zeros((n, dim), dtype=np.float32)
    for i, m in enumerate(mvs):
        if m is not None:
            mean = m.mean(axis=0)
            pooled[i] = mean / (np.linalg.norm(mean) + 1e-12)
    pooled_arr = pa.FixedSizeListArray.from_arrays(pa.array(pooled.reshape(-1)), dim, mask=null)
    n_tokens = pa.array([None if m is None else int(m.shape[0]) for m in mvs], pa.int32())
    return multivector, pooled_arr, n_tokens


def pool_tokens(mv: np.ndarray, factor: int) -> np.ndarray:
    """Hierarchical token pooling: cluster token vectors (Ward) into ``n/factor`` groups, average each.

    This is the scheme of colpali-engine's ``HierarchicalTokenPooler``, written against numpy/scipy
    so it runs on variable-length, padding-free multivectors.
    """
    n = mv.shape[0]
    k = max(1, n // factor)
    if k >= n:
        return mv
    from scipy.cluster.hierarchy import fcluster, linkage

    norm = mv / (np.linalg.norm(mv, axis=1, keepdims=True) + 1e-12)
    labels = fcluster(linkage(norm, method="ward"), t=k, criterion="maxclust")
    pooled = np.stack([mv[labels == lab].mean(axis=0) for lab in np.unique(labels)])
    return pooled.astype(np.float32)
