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

log = logging.getLogger(__name__)

STREAM_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("collection", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("doc_kind", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("index", pa.int32()),
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

EMBEDDED_FIELDS = [
    pa.field("multivector", pa.list_(pa.list_(pa.float32()))),
    pa.field("pooled", pa.list_(pa.float32())),
    pa.field("n_tokens", pa.int32()),
    pa.field("embed_s", pa.float64()),
]
EMBEDDED_SCHEMA = pa.schema([f for f in STREAM_SCHEMA if not f.name.startswith("enc_")] + EMBEDDED_FIELDS)


def _resize_to(img: Any, max_pixels: int) -> Any:
    w, h = img.size
    if w * h <= max_pixels:
        return img
    scale = (max_pixels / (w * h)) ** 0.5
    return img.resize((max(1, int(w * scale)), max(1, int(h * scale))))


def _jpeg(img: Any, max_pixels: int, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    _resize_to(img, max_pixels).convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=STREAM_SCHEMA)


class ReadStage:
    """Decode files into items: render PDF pages, load images, sample clip frames; OCR where needed.

    Input rows: ``collection``, ``source_uri``, ``content_hash``, ``doc_kind``. Output: stream rows,
    yielded in small tables so a 700-page PDF never sits in memory whole.
    """

    def __init__(self, ingest_cfg: dict[str, Any], encoder_pixels: int, rows_per_table: int = 8) -> None:
        from mmrag.config import IngestConfig

        self.cfg = IngestConfig.model_validate(ingest_cfg)
        self.encoder_pixels = encoder_pixels
        self.rows_per_table = rows_per_table

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for doc in batch.to_pylist():
            yield from self._read_one(doc)

    def _read_one(self, doc: dict[str, Any]) -> Iterator[pa.Table]:
        from mmrag.ingest import readers
        from mmrag.ingest.sources import local_path

        base = {k: doc[k] for k in ("collection", "source_uri", "content_hash", "doc_kind")}
        n_items = n_errors = 0
        pending: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        try:
            with local_path(doc["source_uri"]) as path:
                for rec in readers.read_any(path, self.cfg, kind=doc["doc_kind"]):
                    if isinstance(rec, readers.DecodeError):
                        pending.append({**base, "kind": "error", "page": rec.page, "reason": rec.reason})
                        n_errors += 1
                    else:
                        pending.append({**base, **self._item_row(rec, n_items), "read_s": time.perf_counter() - t0})
                        n_items += 1
                        t0 = time.perf_counter()
                    if len(pending) >= self.rows_per_table:
                        yield _rows_table(pending)
                        pending = []
        except Exception as e:  # a reader bug or a library crash on a hostile file must not stop the job
            log.exception("reading %s failed", doc["source_uri"])
            pending.append({**base, "kind": "error", "reason": f"could not be read: {type(e).__name__}: {e}"})
            n_errors += 1
        pending.append({**base, "kind": "end", "n_items": n_items, "n_errors": n_errors})
        yield _rows_table(pending)

    def _item_row(self, rec: Any, index: int) -> dict[str, Any]:
        from mmrag.ingest import readers

        images = list(rec.images)
        key = rec.keyframe
        text = rec.text or ""
        text_source = rec.text_source
        if self.cfg.ocr == "always" or (self.cfg.ocr == "auto" and not text.strip()):
            ocr_text = readers.ocr_image(key, self.cfg.ocr_lang)
            if ocr_text.strip():
                text = f"{text}\n{ocr_text}".strip()
                text_source = "ocr" if text_source is None else text_source
        enc = [np.asarray(_resize_to(im, self.encoder_pixels).convert("RGB")) for im in images]
        h, w = enc[0].shape[:2]
        enc = [
            e if e.shape[:2] == (h, w) else np.asarray(images[i].convert("RGB").resize((w, h)))
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


class EmbedStage:
    """Embed items with the ColPali-family encoder; a clip's multivector is built from its frames.

    A clip's frames are embedded together and their token vectors concatenated (optionally pooled
    with ``token_pooling_factor``), so MaxSim against a clip looks at every sampled frame.
    """

    def __init__(self, models_cfg: dict[str, Any], token_pooling_factor: int = 1, batch_size: int = 4) -> None:
        from mmrag.config import ModelsConfig
        from mmrag.models.encoder import ColPaliEncoder

        self.encoder = ColPaliEncoder.from_config(ModelsConfig.model_validate(models_cfg), batch_size=batch_size)
        self.pool_factor = token_pooling_factor

    def __call__(self, batch: pa.Table) -> pa.Table:
        from PIL import Image

        rows = batch.to_pylist()
        images: list[Any] = []
        owners: list[int] = []
        for i, r in enumerate(rows):
            if r["kind"] != "item":
                continue
            for raw in r["enc_frames"]:
                arr = np.frombuffer(raw, dtype=np.uint8).reshape(r["enc_h"], r["enc_w"], 3)
                images.append(Image.fromarray(arr))
                owners.append(i)
        t0 = time.perf_counter()
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
            per_item = self._one_by_one(rows, images, owners)
        dt_each = (time.perf_counter() - t0) / max(1, len(per_item))
        out = []
        for i, r in enumerate(rows):
            r = {k: v for k, v in r.items() if not k.startswith("enc_")}
            if r["kind"] == "item":
                parts = per_item.get(i)
                if not parts:
                    r.update(kind="error", reason="the encoder could not embed this item")
                else:
                    mv = np.concatenate(parts, axis=0)
                    if self.pool_factor > 1:
                        mv = pool_tokens(mv, self.pool_factor)
                    pooled = mv.mean(axis=0)
                    pooled = pooled / (np.linalg.norm(pooled) + 1e-12)
                    r.update(multivector=mv.astype(np.float32).tolist(), pooled=pooled.astype(np.float32).tolist())
                    r.update(n_tokens=int(mv.shape[0]), embed_s=dt_each)
            out.append(r)
        return pa.Table.from_pylist(out, schema=EMBEDDED_SCHEMA)

    def _one_by_one(self, rows: list[dict[str, Any]], images: list[Any], owners: list[int]) -> dict[int, list]:
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
