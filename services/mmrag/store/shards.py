"""The index split over shards (``retriever.shards``): which shard holds an item, and the merge of the shards' parts.

Shard ``i`` of ``n`` holds the items whose :func:`shard_of` their id is ``i`` (a stable hash, the same in every process
and on every load, so a refresh never moves an item). The full-text index stays one, on the shared table: each shard
runs the BM25 query over the whole table (global document frequencies) and keeps its own items.

The merge gives what one index over all items gives (``tests/unit/store/test_shards.py``):

- ``visual``, ``text``, ``dense``: the top ``k`` of the union of every shard's top ``k`` (every channel's scores are
  absolute: exact MaxSim, BM25 with global statistics, cosine), ties by id as in one index;
- ``hybrid``: each shard sends each channel's list (top ``depth``, raw scores, :meth:`SearchIndex.search_many` with
  ``partial``); the lists are merged per channel, then fused once (:func:`mmrag.store.fusion.fuse`), so reciprocal
  ranks and min-max normalisation are those of the global lists, and the weights are renormalised over the channels
  that any shard can serve, as one index over all items does.

The candidate stages inside a shard (the pooled stage's ``first_stage_k``, the dense channel's first stage) keep as
many candidates per shard as one index keeps in all, so on collections larger than those stages a sharded search
scores more candidates than one index (recall is at least as high; results are then no longer bit-equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mmrag.store.fusion import fuse
from mmrag.store.hits import Hit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
#: The channels, in the order one index passes them to the fusion (the order decides float sums and ties).
CHANNELS = ("visual", "dense", "bm25")


def shard_of(ids: Sequence[str] | pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """The shard (``0 <= s < n``) of each id: FNV-1a over its UTF-8 bytes with a 64-bit finaliser, mod ``n``.

    Vectorised over the Arrow buffers (one gather per byte position), so a refresh's id scan of a million items
    costs tens of milliseconds; stable across processes (Python's ``hash`` is salted per process)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.string())
    if not isinstance(ids, pa.Array):
        ids = pa.array(list(ids), pa.string())
    if ids.type != pa.large_string():
        ids = ids.cast(pa.large_string())
    m = len(ids)
    if m == 0 or n <= 1:
        return np.zeros(m, np.int64)
    bufs = ids.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[ids.offset : ids.offset + m + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    starts, lens = offsets[:-1], np.diff(offsets)
    h = np.full(m, _FNV_OFFSET, np.uint64)
    last = len(data) - 1
    with np.errstate(over="ignore"):
        for j in range(int(lens.max()) if m else 0):
            live = lens > j
            b = data[np.minimum(starts + j, last)].astype(np.uint64)
            h = np.where(live, (h ^ b) * _FNV_PRIME, h)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return (h % np.uint64(n)).astype(np.int64)


def keep_shard(table: pa.Table, index: int, count: int) -> pa.Table:
    """The rows of ``table`` (with an ``id`` column) that shard ``index`` of ``count`` holds (all when ``count`` 1)."""
    if count <= 1 or table.num_rows == 0:
        return table
    return table.filter(pa.array(shard_of(table.column("id"), count) == index))


def _hit(d: Mapping[str, Any] | Hit) -> Hit:
    if isinstance(d, Hit):
        return d
    return Hit(**{**d, "channels": tuple(d.get("channels") or ())})


def top(lists: Sequence[Sequence[Mapping[str, Any] | Hit]], k: int) -> list[Hit]:
    """The top ``k`` of the union of ranked lists, by score, ties by id (as every channel of one index orders)."""
    merged = [_hit(h) for hits in lists for h in hits]
    merged.sort(key=lambda h: (-h.score, h.id))
    return merged[:k]


def hybrid_weights(raw: Mapping[str, float], can: set[str]) -> dict[str, float] | None:
    """The positive weights over the channels some shard can serve, summing to 1 (as one index renormalises);
    None when none is left (one index then ranks by the visual channel alone)."""
    usable = {c: float(w) for c, w in raw.items() if w > 0 and c in can}
    total = sum(usable.values())
    return {c: w / total for c, w in usable.items()} if usable else None


def merge_hybrid(
    parts: Sequence[Mapping[str, Any]],
    raw_weights: Mapping[str, float],
    k: int,
    *,
    method: str,
    rrf_k: int,
) -> list[Hit] | None:
    """The fused top ``k`` from the shards' parts (``{"rankings": {channel: [hit, ...]}, "depths": {channel: n},
    "channels": [...]}``); None when no shard can serve any weighted channel (then search visual alone)."""
    can = {c for p in parts for c in p.get("channels", ())}
    w = hybrid_weights(raw_weights, can)
    if w is None:
        return None
    rankings: dict[str, list[Hit]] = {}
    for c in CHANNELS:
        if c not in w:
            continue
        depth = max((int(p.get("depths", {}).get(c, 0)) for p in parts), default=0)
        rankings[c] = top([p.get("rankings", {}).get(c, []) for p in parts], depth)
    return fuse(rankings, w, k, method=method, rrf_k=rrf_k)  # type: ignore[arg-type]


__all__ = ["CHANNELS", "hybrid_weights", "keep_shard", "merge_hybrid", "shard_of", "top"]
