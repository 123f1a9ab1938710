"""The dense text channel in RAM: every item's text-window vectors, searched by max over windows.

Per visible item the snapshot holds its windows' vectors quantised to int8 (one scale per window; 384 B instead of
1.5 kB per window) and the float32 mean vector. A query scores an item as its best window (cosine; vectors are
L2-normalised). Collections with up to ``exact_rows`` candidate items are scored over every window; larger ones
first keep the ``first_stage_k`` items whose mean vector is closest, then score those items' windows.

The first stage is LanceDB's vector index on ``text_vector`` (the mean vectors) when the table has one
(:func:`ann_candidates`; ingestion builds it once a collection is large), else it runs in RAM on the mean vectors
projected onto their top ``FIRST_STAGE_DIMS`` principal directions
(uncentred, so dot products are what the projection keeps best): a 100k x 384 float32 mat-vec is memory-bound
(~150 MB read per query), a 100k x 128 one reads a third of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmrag.store.cascade import capacity, make_room, offsets, quantise, ranges, top
from mmrag.store.schema import TEXT_VECTOR

#: Dimensions of the projected mean vectors the first stage scores.
FIRST_STAGE_DIMS = 128


@dataclass
class TextVectors:
    """Dense text vectors of a snapshot's rows (row ``r`` of the snapshot is row ``r`` here)."""

    dim: int
    mean: np.ndarray  # [n, dim] float32, zero rows for items without text
    start: np.ndarray  # int64 [n]: first window of each row in ``chunks``
    count: np.ndarray  # int64 [n]: windows per row (0: no text vectors)
    chunks: np.ndarray  # [capacity, dim] int8; rows [0, used) hold windows (and holes of removed items)
    scale: np.ndarray  # [capacity] float32
    proj: np.ndarray | None = None  # [dim, r] projection of the first stage (None: computed on first use)
    mean_r: np.ndarray | None = None  # [n, r] projected mean vectors
    used: int = 0  # high-water mark in ``chunks``: a later snapshot appends past it (see cascade.make_room)
    proj_rows: int = 0  # items with text when ``proj`` was computed

    @property
    def nbytes(self) -> int:
        parts = [self.mean, self.start, self.count, self.chunks[: self.used], self.scale[: self.used]]
        parts += [a for a in (self.proj, self.mean_r) if a is not None]
        return sum(a.nbytes for a in parts)

    def _projected(self) -> tuple[np.ndarray, np.ndarray]:
        if self.proj is None or self.mean_r is None:
            r = min(FIRST_STAGE_DIMS, self.dim)
            rows = self.mean[self.count > 0]
            if len(rows) > 20000:
                rows = rows[np.random.default_rng(0).choice(len(rows), 20000, replace=False)]
            _, vecs = np.linalg.eigh(rows.T @ rows)  # ascending eigenvalues
            proj = np.ascontiguousarray(vecs[:, ::-1][:, :r], dtype=np.float32)
            self.mean_r = np.ascontiguousarray(self.mean @ proj, dtype=np.float32)
            self.proj, self.proj_rows = proj, int((self.count > 0).sum())
        return self.proj, self.mean_r

    @classmethod
    def build(
        cls,
        n: int,
        dim: int,
        rows: Iterable[tuple[int, np.ndarray | None, np.ndarray | None]],
        reuse: dict[int, int] | None = None,
        old: TextVectors | None = None,
    ) -> TextVectors:
        """From ``(row, windows [c, dim] | None, mean [dim] | None)`` for the rows not in ``reuse`` (new row ->
        row of ``old`` with the same id, whose vectors are copied instead of re-read)."""
        mean = np.zeros((n, dim), np.float32)
        parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        count = np.zeros(n, np.int64)
        if reuse and old is not None:
            for r, o in reuse.items():
                c = int(old.count[o])
                if c:
                    s = int(old.start[o])
                    parts[r] = (old.chunks[s : s + c], old.scale[s : s + c])
                    count[r] = c
                    mean[r] = old.mean[o]
        for r, win, m in rows:
            if win is None or len(win) == 0:
                continue
            q, sc = quantise(np.asarray(win, np.float32), "int8")
            parts[r] = (q, sc)
            count[r] = len(win)
            mean[r] = m if m is not None else _unit(np.asarray(win, np.float32).mean(0))
        start = offsets(count)
        total = int(count.sum())
        chunks = np.empty((capacity(total), dim), np.int8)
        scale = np.empty(len(chunks), np.float32)
        for r, (q, sc) in parts.items():
            s = int(start[r])
            chunks[s : s + len(q)] = q
            scale[s : s + len(q)] = sc
        return cls(dim=dim, mean=mean, start=start, count=count, chunks=chunks, scale=scale, used=total)

    def updated(
        self,
        n: int,
        kept: np.ndarray,
        src: np.ndarray,
        rows: Iterable[tuple[int, np.ndarray | None, np.ndarray | None]],
    ) -> TextVectors:
        """A new snapshot's vectors: row ``kept[j]`` is this one's row ``src[j]`` (nothing copied but the per-row
        arrays); ``rows`` gives the other rows' windows, written past :attr:`used` in the shared ``chunks``."""
        mean = np.zeros((n, self.dim), np.float32)
        mean[kept] = self.mean[src]
        count = np.zeros(n, np.int64)
        count[kept] = self.count[src]
        start = np.zeros(n, np.int64)
        start[kept] = self.start[src]
        parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for r, win, m in rows:
            if win is None or len(win) == 0:
                continue
            parts[r] = quantise(np.asarray(win, np.float32), "int8")  # type: ignore[assignment]
            count[r] = len(win)
            mean[r] = m if m is not None else _unit(np.asarray(win, np.float32).mean(0))
        fresh = np.fromiter(parts, np.int64, len(parts))
        chunks, scale, start, used = make_room(self.chunks, self.scale, self.used, start, count, fresh)
        for r, (q, sc) in parts.items():
            s = int(start[r])
            chunks[s : s + len(q)] = q
            scale[s : s + len(q)] = sc  # type: ignore[index]
        out = TextVectors(dim=self.dim, mean=mean, start=start, count=count, chunks=chunks, scale=scale, used=used)  # type: ignore[arg-type]
        with_text = int((count > 0).sum())
        if self.proj is not None and self.mean_r is not None and with_text <= 2 * self.proj_rows:
            # the first stage's projection still fits (it is recomputed once the collection has doubled)
            mean_r = np.empty((n, self.proj.shape[1]), np.float32)
            mean_r[kept] = self.mean_r[src]
            other = np.setdiff1d(np.arange(n), kept)
            mean_r[other] = mean[other] @ self.proj
            out.proj, out.mean_r, out.proj_rows = self.proj, mean_r, self.proj_rows
        return out

    def search(
        self,
        q: np.ndarray,
        allowed: np.ndarray,
        k: int,
        *,
        first_stage_k: int,
        exact_rows: int,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores (best window's cosine) of the top ``k`` of ``allowed`` rows, best first, plus any row tied
        with the ``k``-th (which of them to keep is the caller's choice, by id). ``candidates``:
        the first stage's rows, found elsewhere (a vector index); they must pass the same filters as ``allowed``."""
        allowed = allowed[self.count[allowed] > 0]
        if not len(allowed):
            return allowed, np.zeros(0, np.float32)
        q = np.asarray(q, np.float32)
        cand = allowed
        if candidates is not None:
            cand = np.unique(candidates[self.count[candidates] > 0])
            if not len(cand):
                return cand, np.zeros(0, np.float32)
        elif len(allowed) > exact_rows:
            proj, mean_r = self._projected()
            s1 = mean_r @ (q @ proj)  # one mat-vec over every row beats gathering the allowed ones first
            cand, _ = top(allowed, s1[allowed], first_stage_k)
        lens = self.count[cand]
        idx = ranges(self.start[cand], lens)
        # einsum sums each row's products in one fixed order: BLAS's mat-vec blocks rows by their position, so equal
        # windows (a title shared by pages) scored a last bit apart and tied items came back in either order
        sims = np.einsum("ij,j->i", self.chunks[idx].astype(np.float32), q) * self.scale[idx]
        offsets = np.zeros(len(cand), np.int64)
        offsets[1:] = np.cumsum(lens)[:-1]
        best = np.maximum.reduceat(sims, offsets)
        rows, scores = top(cand, best, k)
        if len(rows) and len(rows) < len(cand):  # every row tied with the k-th too: the caller cuts them by id
            tied = cand[(best == scores.min()) & ~np.isin(cand, rows)]
            rows, scores = np.concatenate([rows, tied]), np.concatenate([scores, np.full(len(tied), scores.min())])
        o = np.lexsort((rows, -scores))
        return rows[o], scores[o]


def ann_candidates(
    table: Any, q: np.ndarray, where: str, k: int, *, nprobes: int, refine_factor: int | None = None
) -> list[str]:
    """Ids of the ``k`` items whose ``text_vector`` is closest (cosine) to ``q`` among the rows passing ``where``,
    from LanceDB's vector index on that column (rows written since the index was built are searched flat)."""
    b = (
        table.search(np.asarray(q, np.float32), vector_column_name=TEXT_VECTOR)
        .distance_type("cosine")
        .where(where, prefilter=True)
        .select(["id", "_distance"])
        .nprobes(nprobes)
    )
    if refine_factor:
        b = b.refine_factor(refine_factor)
    return b.limit(k).to_arrow().column("id").to_pylist()


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


__all__ = ["TextVectors", "ann_candidates"]
