"""Evidence for search hits, as the API returns it: regions on pages and clip frames, and snippet highlights.

:class:`EvidenceFinder` reads the hits' multivectors and sizes from the store (one read), lays the query's
per-patch MaxSim contributions back on each page or frame (:mod:`mmrag.models.evidence`) and marks the query's
words in each snippet. The retriever deployment runs it (it holds the encoder, whose processor fixes the token
layout); it runs only when a request asks for ``evidence``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrag.models import evidence as E

#: What the page and the API say about regions from a random-weight retriever.
TINY_NOTE = (
    "The visual retriever is a tiny random-weight model: these regions show where its vectors matched, which is noise "
    "here; with a real ColPali-family model they show what supported the match."
)


class EvidenceFinder:
    """Regions and highlights for hits of one query. ``encoder``: a :class:`~mmrag.models.encoder.ColPaliEncoder`
    (its processor gives the token layout); ``store``: a :class:`~mmrag.store.LanceStore`."""

    def __init__(self, encoder: Any, store: Any, *, note: str | None = None) -> None:
        from mmrag.models.encoder import QUERY_AUGMENTATION_TOKENS

        self.encoder = encoder
        self.store = store
        self.note = note
        self.last_ms = 0.0
        processor = getattr(encoder, "processor", None)
        self.layout = (
            E.TokenLayout.from_processor(
                processor,
                query_suffix=QUERY_AUGMENTATION_TOKENS,
                max_aspect_ratio=getattr(encoder, "max_aspect_ratio", 150.0),
            )
            if processor is not None
            else None
        )

    def terms(self, query: str) -> list[str] | None:
        """The query's tokens as text, aligned with the query vectors that carry its words."""
        tok = getattr(getattr(self.encoder, "processor", None), "tokenizer", None)
        if tok is None or self.layout is None:
            return None
        prefix = getattr(self.encoder.processor, "query_prefix", "") or ""
        ids = tok(prefix + query)["input_ids"][self.layout.query_prefix :]
        return [tok.decode([i]) for i in ids]

    def find(
        self, query: str, query_mv: np.ndarray | None, hits: Sequence[dict[str, Any]], *, visual: bool = True
    ) -> dict[str, dict[str, Any]]:
        """id -> evidence for each hit (``{"id", "text"?}`` dicts): ``regions`` (page or frames), ``highlights`` of
        the snippet, ``method``, ``note`` (``last_ms`` then holds the time it took). ``visual`` False (or no
        ``query_mv``): highlights only."""
        t0 = time.perf_counter()
        out: dict[str, dict[str, Any]] = {}
        rows: dict[str, dict[str, Any]] = {}
        mvs: dict[str, np.ndarray] = {}
        ids = [h["id"] for h in hits]
        if visual and query_mv is not None and self.layout is not None and ids:
            mvs = self.store.multivectors(ids)
            rows = self.store.get_items(ids, ["width", "height", "modality", "frame_ts"])
        terms = self.terms(query) if mvs else None
        for h in hits:
            snippet = (h.get("text") or "")[:300]
            ev: dict[str, Any] = {
                "method": "text",
                "regions": [],
                "grid": None,
                "patch_share": None,
                "highlights": E.highlights(snippet, query),
                "note": None,
            }
            row, mv = rows.get(h["id"]), mvs.get(h["id"])
            if row is not None and mv is not None and len(mv):
                n_frames = len(row.get("frame_ts") or []) if row["modality"] == "clip" else 1
                got = E.item_regions(
                    np.asarray(query_mv, np.float32),
                    mv,
                    width=int(row["width"]),
                    height=int(row["height"]),
                    n_frames=max(1, n_frames),
                    layout=self.layout,  # type: ignore[arg-type]
                    terms=terms,
                )
                if got is not None:
                    ts = row.get("frame_ts") if row["modality"] == "clip" else None
                    flat = [
                        {**r, "frame": f["frame"] if ts else None, "t_s": ts[f["frame"]] if ts else None}
                        for f in got["frames"]
                        for r in f["regions"]
                    ]
                    ev.update(method="maxsim", regions=flat, grid=got["grid"], patch_share=got["patch_share"])
                    ev["note"] = self.note
            out[h["id"]] = ev
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out


__all__ = ["TINY_NOTE", "EvidenceFinder"]
