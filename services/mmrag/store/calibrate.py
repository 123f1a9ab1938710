"""Choosing the cascade's first-stage size for a recall target, measured on the collection itself at load.

The pooled stage decides recall (the int8 token stage ranks almost exactly; benchmarks/results/retrieval.md), and how
many pooled candidates a recall target needs grows with the collection: 1500 gave recall@10 0.998 at 10k clustered
items and 0.96 at 100k. So instead of a hand-set ``first_stage_k``, :func:`calibrate` draws pseudo-queries from
stored items' own tokens (a random subset of one item's tokens plus noise, as a text query relates to a page), finds
each one's top-10 in the whole collection by token MaxSim, and reads off how deep in the collection's pooled ranking
those top-10 sit; the depth that keeps ``recall_target`` of them is the first stage's size.

The top-10 are searched for in a deep pooled shortlist (``calibration_shortlist`` items, a multiple of the depths
that targets need), not in every item: a true top-10 item ranked below the shortlist is missed. So a query whose
found top-10 reach past half its shortlist is measured again with one four times deeper, up to
``calibration_max_shortlist``. An earlier version scored a uniform 1% sample and scaled the depth by 100: at 1M items
a sample's top-10 are weaker matches than the collection's, and it chose 112,700 where 3000 met the target.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from mmrag.store.cascade import offsets as _offsets
from mmrag.store.cascade import ranges as _ranges
from mmrag.store.cascade import top_idx as _top_idx
from mmrag.store.snapshot import Snapshot

#: items scored per block when token-scoring a shortlist (keeps the similarity block ~50 MB)
_BLOCK_ITEMS = 256
#: one-sided 95% normal quantile: the confidence bound on the depth
_Z = 1.645
#: pooled vectors converted per block (float16 -> float32) for the pooled scores
_POOLED_BLOCK = 65536


def calibrate(snap: Snapshot, config: Any, k: int = 10, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``first_stage_k`` that keeps ``config.recall_target`` of the top-``k`` by token MaxSim, estimated with
    ``config.calibration_queries`` pseudo-queries over the items with tokens (less modalities in ``exclude``, which
    the visual channel never returns); returns what was measured (``first_stage_k`` among it). Needs the token
    arena (``token_store`` int8 or float16)."""
    t0 = time.perf_counter()
    mask = snap.tok_len > 0
    if exclude:
        mask &= ~snap.modality.mask(exclude)
    rows = np.flatnonzero(mask)
    n = len(rows)
    if snap.tokens is None or n <= k:
        return {"first_stage_k": None, "reason": "no token stage or too few items"}
    rng = np.random.default_rng(config.calibration_seed)
    drawn = rng.choice(rows, min(n, config.calibration_queries), replace=False)
    queries = [_pseudo_query(snap, int(r), config, rng) for r in drawn]

    ranks, depths, capped = [], [], 0
    for q in queries:
        s1 = _pooled_scores(snap, q.mean(axis=0), rows)
        depth = min(n, config.calibration_shortlist)
        while True:
            short = _top_idx(s1, depth)
            s2 = _token_maxsim(snap, q, rows[short])
            top = short[_top_idx(s2, min(k, len(short)))]
            # a found top-k item's pooled rank: how many items score above it (0 = first)
            rank = np.sort((s1[None, :] > s1[top][:, None]).sum(axis=1))
            if depth >= n or rank[-1] < depth // 2:
                break
            if depth >= config.calibration_max_shortlist:
                capped += 1
                break
            depth = min(n, depth * 4, config.calibration_max_shortlist)
        ranks.append(rank)
        depths.append(depth)
    flat = np.sort(np.concatenate(ranks))
    m, p = len(flat), config.recall_target
    # the depth keeping share p of the found pairs, and an upper confidence bound on it: the order statistic that
    # is at or past the true p-quantile with ~95% probability (the ranks are heavy-tailed, so a point estimate from
    # a few dozen queries came out anywhere from half to twice the depth that many queries measured)
    point = math.ceil(p * m)
    bound = min(m, math.ceil(p * m + _Z * math.sqrt(m * p * (1 - p))))
    depth_point = int(flat[point - 1]) + 1 if point else 1
    depth = int(flat[bound - 1]) + 1 if bound else 1
    first_stage_k = int(min(n, max(config.exact_k, depth)))
    return {
        "first_stage_k": first_stage_k,
        "recall_target": p,
        "depth_point_estimate": depth_point,
        "queries": len(queries),
        "deepest_rank": int(flat[-1]),
        "shortlists": sorted(set(depths)),
        "capped_queries": capped,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _pseudo_query(snap: Snapshot, row: int, config: Any, rng: np.random.Generator) -> np.ndarray:
    """``calibration_query_tokens`` of one item's tokens with noise, L2-normalised: a query that item answers."""
    st, ln = int(snap.tok_start[row]), int(snap.tok_len[row])
    toks = snap.tokens[st : st + ln].astype(np.float32)
    if snap.tok_scale is not None:
        toks *= snap.tok_scale[st : st + ln, None]
    q = toks[rng.integers(0, ln, config.calibration_query_tokens)]
    q += config.calibration_noise * rng.standard_normal(q.shape, dtype=np.float32) / math.sqrt(snap.dim)
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def _pooled_scores(snap: Snapshot, qmean: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``<mean(q), pooled>`` of ``rows`` in float32, a block at a time (plain numpy: this runs under the index's
    lock, which the scorer's thread pool takes)."""
    out = np.empty(snap.n, np.float32)
    for s in range(0, snap.n, _POOLED_BLOCK):
        out[s : s + _POOLED_BLOCK] = snap.pooled[s : s + _POOLED_BLOCK].astype(np.float32) @ qmean
    return out[rows]


def _token_maxsim(snap: Snapshot, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """MaxSim of ``q`` against ``rows``' stored tokens, blocks of items at a time."""
    out = np.empty(len(rows), np.float32)
    order = np.argsort(snap.tok_start[rows], kind="stable")  # sequential reads through a memory-mapped token tier
    for s in range(0, len(rows), _BLOCK_ITEMS):
        blk = rows[order[s : s + _BLOCK_ITEMS]]
        lens = snap.tok_len[blk]
        idx = _ranges(snap.tok_start[blk], lens)
        toks = snap.tokens[idx].astype(np.float32)
        if snap.tok_scale is not None:
            toks *= snap.tok_scale[idx, None]
        best = np.maximum.reduceat(q @ toks.T, _offsets(lens), axis=1)
        out[order[s : s + _BLOCK_ITEMS]] = best.sum(axis=0)
    return out


__all__ = ["calibrate"]
