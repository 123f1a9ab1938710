"""Choosing the cascade's first-stage size for a recall target, measured on the collection itself at load.

The pooled stage decides recall (the int8 token stage ranks almost exactly; benchmarks/results/retrieval.md), and how
many pooled candidates a recall target needs grows with the collection: 1500 gave recall@10 0.998 at 10k clustered
items and 0.96 at 100k. So instead of a hand-set ``first_stage_k``, :func:`calibrate` samples pseudo-queries from
stored items' own tokens (a random subset of one item's tokens plus noise, as a text query relates to a page),
finds their top-10 by token MaxSim over a random sample of the collection, and reads off how deep in the pooled
ranking of that sample those top-10 sit. Ranks in a uniform sample of a fraction ``f`` of the items are about ``f``
times the ranks in the whole collection, so the depth that keeps ``recall_target`` of them is scaled by ``1/f``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from mmrag.store.cascade import offsets as _offsets
from mmrag.store.cascade import ranges as _ranges
from mmrag.store.snapshot import Snapshot

#: items scored per block when finding the pseudo-queries' top-10 (keeps the similarity block ~50 MB)
_BLOCK_ITEMS = 256


def calibrate(snap: Snapshot, config: Any, k: int = 10) -> dict[str, Any]:
    """The ``first_stage_k`` that keeps ``config.recall_target`` of the top-``k`` by token MaxSim, estimated on
    ``config.calibration_sample`` items and ``config.calibration_queries`` pseudo-queries; returns what was measured
    (``first_stage_k`` among it). Needs the token arena (``token_store`` int8 or float16)."""
    t0 = time.perf_counter()
    rows = np.flatnonzero(snap.tok_len > 0)
    n = len(rows)
    if snap.tokens is None or n <= k:
        return {"first_stage_k": None, "reason": "no token stage or too few items"}
    rng = np.random.default_rng(config.calibration_seed)
    sample = np.sort(rng.choice(rows, min(n, config.calibration_sample), replace=False))
    m = len(sample)
    dim = snap.dim
    queries = []
    for r in rng.choice(sample, min(m, config.calibration_queries), replace=False):
        st, ln = int(snap.tok_start[r]), int(snap.tok_len[r])
        toks = snap.tokens[st : st + ln].astype(np.float32)
        if snap.tok_scale is not None:
            toks *= snap.tok_scale[st : st + ln, None]
        q = toks[rng.integers(0, ln, config.calibration_query_tokens)]
        q += config.calibration_noise * rng.standard_normal(q.shape, dtype=np.float32) / math.sqrt(dim)
        queries.append(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12))
    q_all = np.concatenate(queries)
    q_seg = _offsets(np.array([len(q) for q in queries], np.int64))

    # every pseudo-query's token MaxSim against every sampled item, blocks of items at a time
    scores = np.empty((len(queries), m), np.float32)
    for s in range(0, m, _BLOCK_ITEMS):
        blk = sample[s : s + _BLOCK_ITEMS]
        lens = snap.tok_len[blk]
        idx = _ranges(snap.tok_start[blk], lens)
        toks = snap.tokens[idx].astype(np.float32)
        if snap.tok_scale is not None:
            toks *= snap.tok_scale[idx, None]
        # plain numpy, not the scorer's thread pool: this runs under the index's lock, which the pool takes
        sims = q_all @ toks.T  # [sum of query tokens, tokens]
        best = np.maximum.reduceat(sims, _offsets(lens), axis=1)
        scores[:, s : s + len(blk)] = np.add.reduceat(best, q_seg, axis=0)

    # where each query's true top-k sits in the sample's pooled ranking (0 = first)
    ranks = []
    pooled = snap.pooled[sample]
    for j, q in enumerate(queries):
        s1 = pooled @ q.mean(axis=0)
        order = np.argsort(-s1, kind="stable")
        pos = np.empty(m, np.int64)
        pos[order] = np.arange(m)
        top = np.argpartition(-scores[j], min(k, m) - 1)[: min(k, m)]
        ranks.append(np.sort(pos[top]))
    ranks_arr = np.stack(ranks)  # [queries, k]
    # recall at depth c = share of (query, top-k item) pairs ranked below c; take the smallest c meeting the target
    flat = np.sort(ranks_arr.ravel())
    need = math.ceil(config.recall_target * len(flat))
    depth = int(flat[need - 1]) + 1 if need else 1
    fraction = m / n
    first_stage_k = int(min(n, max(config.exact_k, math.ceil(depth / fraction))))
    return {
        "first_stage_k": first_stage_k,
        "recall_target": config.recall_target,
        "sample_items": m,
        "queries": len(queries),
        "depth_in_sample": depth,
        "seconds": round(time.perf_counter() - t0, 2),
    }


__all__ = ["calibrate"]
