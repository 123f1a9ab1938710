"""The maths shared by the late-interaction stages: token quantisation, top-n selection, offset ranges.

Used by the visual cascade (:mod:`mmrag.store.search`) and the dense text channel (:mod:`mmrag.store.dense`),
which both hold variable-length lists of vectors per item in one flat int8 array with per-vector scales.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa

TokenStore = Literal["int8", "float16", "none"]
#: Tokens quantised per step when loading (2048 x 128 float32 = 1 MiB, so the passes over it stay in cache).
FILL_BLOCK = 2048


def quantise(mv: np.ndarray, store: TokenStore) -> tuple[np.ndarray, np.ndarray | None]:
    """Token vectors in the in-RAM format: int8 with a per-token scale (max |x| -> 127), or float16."""
    if store == "float16":
        return mv.astype(np.float16), None
    amax = np.abs(mv).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.rint(mv / scale[:, None]).clip(-127, 127).astype(np.int8)
    return q, scale


def flat_multivectors(column: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``list<fixed_size_list<float32 | float16, dim>>`` column as one float32 ``[total, dim]`` array and the rows'
    lengths (a null row has length 0)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
    if arr.null_count:
        arr = arr.fill_null(pa.scalar([], arr.type))
    offs = arr.offsets.to_numpy()
    flat = arr.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)[offs[0] : offs[-1]]
    if flat.dtype != np.float32:  # a float16 full-precision tier (half the disk of float32): exact maths in float32
        flat = flat.astype(np.float32)
    return flat, np.diff(offs).astype(np.int64)


def multivectors(column: pa.ChunkedArray | pa.Array, dim: int) -> list[np.ndarray]:
    """A ``list<fixed_size_list<float32, dim>>`` column as one float32 ``[n_t, dim]`` view per row (no copy)."""
    flat, lens = flat_multivectors(column, dim)
    starts = offsets(lens)
    return [flat[s : s + n] for s, n in zip(starts.tolist(), lens.tolist(), strict=True)]


def top_idx(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest scores (unordered)."""
    if n >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, n - 1)[:n]


def top(rows: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = top_idx(scores, n)
    return rows[keep], scores[keep]


def ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lens[i])`` for all i, without a Python loop."""
    lens = np.asarray(lens, np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    seg = np.zeros(len(lens), np.int64)
    seg[1:] = np.cumsum(lens)[:-1]
    return np.repeat(np.asarray(starts, np.int64) - seg, lens) + np.arange(total, dtype=np.int64)


def offsets(lens: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum: where each of ``lens``' segments starts when laid end to end."""
    out = np.zeros(len(lens), np.int64)
    if len(lens):
        out[1:] = np.cumsum(lens)[:-1]
    return out


def capacity(live: int) -> int:
    """Vectors to allocate for ``live`` ones: a quarter more (at least 64k), so that later appends land in the tail
    without copying what is there (np.empty's untouched pages cost no RAM)."""
    return live + max(live // 4, 1 << 16)


def make_room(
    arena: np.ndarray,
    scales: np.ndarray | None,
    used: int,
    start: np.ndarray,
    lens: np.ndarray,
    fresh: np.ndarray,
    alloc: Any = np.empty,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Room for the ``fresh`` rows' vectors in a flat arena that older snapshots share; returns
    ``(arena, scales, start, used)``.

    ``start`` holds the kept rows' offsets into ``arena``; ``fresh`` rows get room past ``used`` (the high-water mark
    of the snapshot being replaced), where no older snapshot reads, so the arena is shared and nothing is copied. When
    the tail is too short, or removed rows' holes would pass a quarter of the arena, the live rows are copied into a
    new arena in row order instead (amortised: it takes many refreshes to fill a quarter), made by ``alloc(shape,
    dtype)`` (:class:`mmrag.store.arena.Arena`: in RAM or a memory-mapped file).
    """
    need = int(lens[fresh].sum())
    live = int(lens.sum())
    if used + need <= len(arena) and used + need - live <= len(arena) // 4:
        start[fresh] = used + offsets(lens[fresh])
        return arena, scales, start, used + need
    new_start = offsets(lens)
    is_fresh = np.zeros(len(lens), bool)
    is_fresh[fresh] = True
    kept = np.flatnonzero(~is_fresh & (lens > 0))
    out = alloc((capacity(live), arena.shape[1]), arena.dtype)
    dst, src = ranges(new_start[kept], lens[kept]), ranges(start[kept], lens[kept])
    out[dst] = arena[src]
    out_scales = None
    if scales is not None:
        out_scales = alloc((len(out),), scales.dtype)
        out_scales[dst] = scales[src]
    return out, out_scales, new_start, live


def fill_rows(
    tokens: np.ndarray,
    scales: np.ndarray | None,
    tok_start: np.ndarray,
    tok_len: np.ndarray,
    rows: np.ndarray,
    flat: np.ndarray,
    lens: np.ndarray,
    store: TokenStore,
    flat_scales: np.ndarray | None = None,
) -> int:
    """Write many items' quantised tokens (``flat``: their multivectors end to end, ``lens`` each) in one vectorised
    pass; returns how many had to be fixed up (those go through :func:`fill` one by one). A new replica's load spent
    half its time in per-item calls. With ``flat_scales``, ``flat`` is already int8 (the stored copies of
    :mod:`mmrag.store.tokens`) and is copied as it is."""
    rows = np.asarray(rows, np.int64)
    want = tok_len[rows]
    ok = lens == want
    bad = 0
    if not ok.all():
        starts = offsets(lens)
        for j in np.flatnonzero(~ok).tolist():
            mv = flat[starts[j] : starts[j] + lens[j]]
            if flat_scales is not None:
                mv = mv.astype(np.float32) * flat_scales[starts[j] : starts[j] + lens[j], None]
            bad += fill(tokens, scales, int(tok_start[rows[j]]), int(want[j]), mv, store)
        picked = ranges(starts[ok], lens[ok])
        flat, rows, want = flat[picked], rows[ok], want[ok]
        if flat_scales is not None:
            flat_scales = flat_scales[picked]
    if not len(rows):
        return bad
    starts = tok_start[rows]
    contiguous = np.array_equal(starts[1:], starts[:-1] + want[:-1])  # a full load: rows end to end in the arena
    dst = None if contiguous else ranges(starts, want)
    s0 = int(starts[0])
    for b in range(0, len(flat), FILL_BLOCK):  # cache-sized blocks: whole batches ran 6x slower than per item
        e = min(len(flat), b + FILL_BLOCK)
        q, sc = quantise(flat[b:e], store) if flat_scales is None else (flat[b:e], flat_scales[b:e])
        at: slice | np.ndarray = slice(s0 + b, s0 + e) if dst is None else dst[b:e]
        tokens[at] = q
        if scales is not None:
            scales[at] = sc
    return bad


def fill(
    tokens: np.ndarray, scales: np.ndarray | None, start: int, want: int, mv: np.ndarray, store: TokenStore
) -> int:
    """Write one item's quantised tokens at ``start``; returns 1 if its length had to be fixed up.

    A multivector whose length disagrees with ``n_tokens`` is truncated, or padded by repeating its last token
    (a repeated token never changes a max); the exact stage reads the real multivector anyway.
    """
    mv = np.asarray(mv, dtype=np.float32)
    bad = int(len(mv) != want)
    if len(mv) == 0:
        mv = np.zeros((1, tokens.shape[1]), np.float32)
    if len(mv) > want:
        mv = mv[:want]
    elif len(mv) < want:
        mv = np.concatenate([mv, np.repeat(mv[-1:], want - len(mv), axis=0)])
    q, sc = quantise(mv, store)
    tokens[start : start + want] = q
    if scales is not None:
        scales[start : start + want] = sc
    return bad


__all__ = [
    "TokenStore",
    "capacity",
    "fill",
    "fill_rows",
    "flat_multivectors",
    "make_room",
    "multivectors",
    "offsets",
    "quantise",
    "ranges",
    "top",
    "top_idx",
]
