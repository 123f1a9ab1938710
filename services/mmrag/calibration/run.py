"""Calibrating one collection: draw probes, run every channel and the reranker, fit, store the result."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from mmrag.calibration import fit as F
from mmrag.calibration.probes import METHOD, content_order, sample_probes
from mmrag.config import MmragConfig

log = logging.getLogger(__name__)

DEPTH = 50
BATCH = 16


def fingerprint(cfg: MmragConfig) -> str:
    """What a calibration depends on besides the data: the models, the reranker, the probe method."""
    m = cfg.models
    parts = [
        METHOD,
        m.retriever.model,
        str(m.retriever.revision),
        m.text.model if m.text is not None else "-",
        cfg.reranker.kind,
        str(cfg.reranker.model),
        str(cfg.calibration.probes),
        str(cfg.calibration.seed),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def needs_calibration(cfg: MmragConfig, store: Any, collection: str) -> str | None:
    """Why ``collection`` should be (re)calibrated now, or None if its calibration still holds."""
    rec = store.calibration(collection)
    n = store.count_items(collection)
    if rec is None:
        return "never calibrated"
    if rec.get("fingerprint") != fingerprint(cfg):
        return "a model, the reranker or the probe settings changed"
    before = int(rec.get("n_items") or 0)
    if abs(n - before) > cfg.calibration.refresh_growth * max(before, 1):
        return f"the collection went from {before} to {n} items"
    return None


def _collection_items(store: Any, collection: str, limit: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``limit`` of the collection's visible items (``id``, ``doc_id``, ``text``, ``context``), sampled evenly."""
    import random

    from lancedb.expr import col, lit

    tbl = store.table("items")
    where = ((col("visible") == lit(True)) & (col("collection") == lit(collection))).to_sql()
    order = ["content_hash", "modality", "page", "start_s"]
    meta = tbl.search().where(where).select(["id", "doc_id", *order]).limit(None).to_arrow().to_pylist()
    meta.sort(key=content_order)  # the table's row order follows the writers' timing
    if len(meta) > limit:
        meta = random.Random(seed).sample(meta, limit)
    ids = [m["id"] for m in meta]
    out: list[dict[str, Any]] = []
    for s in range(0, len(ids), 500):
        chunk = ids[s : s + 500]
        w = ((col("collection") == lit(collection)) & col("id").isin(chunk)).to_sql()
        cols = ["id", "doc_id", "text", *order, *(["context"] if "context" in tbl.schema.names else [])]
        out.extend(tbl.search().where(w).select(cols).limit(None).to_arrow().to_pylist())
    return out


def calibrate(cfg: MmragConfig, collection: str, *, searcher: Any = None, reason: str = "asked") -> dict[str, Any]:
    """Measure ``collection``'s channels and reranker on its own probe queries; store and return the record."""
    from mmrag.search import LocalSearcher

    t0 = time.perf_counter()
    cc = cfg.calibration
    searcher = searcher or LocalSearcher(cfg)
    store = searcher.store
    searcher.index.refresh()
    n_items = store.count_items(collection)
    items = _collection_items(store, collection, limit=max(20 * cc.probes, 2000), seed=cc.seed)
    probes = sample_probes(items, cc.probes, cc.seed)
    record: dict[str, Any] = {
        "method": METHOD,
        "reason": reason,
        "probes": len(probes),
        "models": {
            "retriever": cfg.models.retriever.model,
            "text": cfg.models.text.model if cfg.models.text is not None else None,
            "reranker": cfg.reranker.kind if cfg.reranker.kind != "text-cross-encoder" else cfg.reranker.model,
        },
    }
    if len(probes) < cc.min_probes:
        record.update(
            status="uncalibrated",
            detail=f"only {len(probes)} items have enough text to draw probe queries (need {cc.min_probes}); "
            "the default weights apply",
            weights=None,
        )
    else:
        record.update(_measure(cfg, searcher, collection, probes, n_items))
    record["seconds"] = round(time.perf_counter() - t0, 2)
    store.save_calibration(collection, record, n_items=n_items, fingerprint=fingerprint(cfg))
    searcher.calibrations = store.calibrations()
    log.info("calibrated %s: %s", collection, {k: record.get(k) for k in ("weights", "fusion", "status")})
    return store.calibration(collection) or record


def _measure(cfg: MmragConfig, searcher: Any, collection: str, probes: list[Any], n_items: int) -> dict[str, Any]:
    cc = cfg.calibration
    queries = [p.query for p in probes]
    relevant = [p.item_id for p in probes]
    runs_hits: list[dict[str, list[dict[str, Any]]]] = []
    for s in range(0, len(queries), BATCH):
        runs_hits.extend(searcher.channel_rankings(queries[s : s + BATCH], collection=collection, depth=DEPTH))
    channels = list(runs_hits[0]) if runs_hits else []
    runs = [{c: [(h["id"], float(h["score"])) for h in per[c]] for c in per} for per in runs_hits]
    eligible = [_eligible(per) for per in runs_hits]
    fitted = F.fit_fusion(
        runs,
        relevant,
        n_items=n_items,
        channels=channels,
        grid_step=cc.grid_step,
        chance_z=cc.chance_z,
        min_gain=cc.min_gain,
        eligible=eligible,
    )
    out: dict[str, Any] = {"status": "calibrated", **fitted}
    if fitted["weights"] is None:
        out.update(
            status="no-useful-channel",
            detail="no channel ranked the probe queries' items better than chance; the default weights apply",
        )
        return out
    out["reranker"] = _measure_rerank(cfg, searcher, queries, relevant, runs_hits, fitted)
    return out


def _measure_rerank(
    cfg: MmragConfig,
    searcher: Any,
    queries: list[str],
    relevant: list[str],
    runs_hits: list[dict[str, list[dict[str, Any]]]],
    fitted: dict[str, Any],
) -> dict[str, Any]:
    from mmrag.store.fusion import fused_scores, order

    rr = searcher.reranker
    if rr is None:
        return {"kind": "none", "weight": 0.0}
    n = min(len(queries), cfg.calibration.rerank_probes)
    fused_orders, reranked_orders = [], []
    t0 = time.perf_counter()
    for i in range(n):
        per = runs_hits[i]
        by_id: dict[str, dict[str, Any]] = {}
        for hits in per.values():
            for h in hits:
                prev = by_id.get(h["id"])
                if prev is None:
                    by_id[h["id"]] = {**h, "stage_scores": dict(h.get("stage_scores") or {})}
                else:
                    prev["stage_scores"].update(h.get("stage_scores") or {})
                    if h.get("text") and not prev.get("text"):
                        prev["text"] = h["text"]
        lists = {c: [(h["id"], float(h["score"])) for h in hits] for c, hits in per.items()}
        # nDCG@10 is decided by what the reranker lifts into the top 10; 20 candidates keep the probe cheap
        fused = fused_scores(lists, fitted["weights"], method=fitted["fusion"], eligible=_eligible(per))
        ids = order(fused)[: min(20, cfg.reranker.candidates)]
        cands = [by_id[x] for x in ids]
        qmv = searcher.query_vectors(queries[i]) if rr.needs_query_vectors else None
        scores = rr.score(queries[i], qmv, cands)
        fused_orders.append(ids)
        reranked_orders.append([ids[j] for j in sorted(range(len(ids)), key=lambda j: (-float(scores[j]), j))])
    res = F.fit_rerank(fused_orders, reranked_orders, relevant[:n], min_gain=cfg.calibration.min_gain)
    res["kind"] = getattr(rr, "name", cfg.reranker.kind)
    res["ms_per_query"] = round((time.perf_counter() - t0) * 1e3 / max(1, n), 1)
    return res


def _eligible(per: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """id -> the channels that can rank it, from the hits' ``channels``."""
    return {h["id"]: h["channels"] for hits in per.values() for h in hits if h.get("channels")}


def maybe_calibrate(cfg: MmragConfig, collection: str, *, force: bool = False) -> dict[str, Any] | None:
    """Calibrate ``collection`` if it needs it (or ``force``); the record, or None when nothing was done."""
    from mmrag.store import LanceStore

    if not cfg.calibration.enabled and not force:
        return None
    store = LanceStore.from_config(cfg.store)
    if not store.has_items() or collection not in store.collections():
        return None
    reason = "asked" if force else needs_calibration(cfg, store, collection)
    if reason is None:
        return None
    return calibrate(cfg, collection, reason=reason)


__all__ = ["calibrate", "fingerprint", "maybe_calibrate", "needs_calibration"]
