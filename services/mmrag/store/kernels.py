"""The visual cascade's scoring kernels: pooled mat-vec, int8/float16 token MaxSim, exact MaxSim.

:class:`Scorer` runs the three stages of :mod:`mmrag.store.search`'s visual cascade over a
:class:`~mmrag.store.snapshot.Snapshot`. The maths runs in torch when it is installed (imported on first use; the
int8 token stage measured ~1.5-2x faster than numpy) and all three stages use the same library: numpy's BLAS
threads and torch's spinning side by side slowed the token stage 2-4x. Run torch single-threaded in the serving
process (a Ray replica with fractional ``num_cpus`` already gets ``OMP_NUM_THREADS=1``): the token stage then scores
blocks on one Python thread per core, which do not wait on each other. With torch's own intra-op threads on a
loaded 2-core machine every small op waits at an OpenMP barrier for a preempted thread, and the search was 10x
slower.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mmrag.models.encoder import maxsim
from mmrag.store.cascade import ranges as _ranges
from mmrag.store.cascade import top_idx as _top_idx
from mmrag.store.filters import SearchFilters
from mmrag.store.search_config import SearchError, SearchIndexConfig
from mmrag.store.snapshot import Snapshot

#: Modalities the visual channel never returns: their stored picture is a stand-in (audio items: a waveform), so
#: a visual model's score for them is noise; BM25 and the dense channel find them by their transcript.
NOT_VISUAL = ("audio",)
#: Tokens scored per block in the token stage: 8192 x 128 float32 = 4 MiB stays in cache.
TOKEN_BLOCK = 8192
#: Pooled vectors per block of the first stage when it runs on several threads (or converts for numpy).
POOLED_BLOCK = 65536


class Scorer:
    """The cascade's stages with their backend (torch or numpy) and the token stage's thread pool.

    ``lock`` guards the pool; the index passes its own lock, the one its refresh holds.
    """

    def __init__(self, config: SearchIndexConfig, lock: threading.Lock) -> None:
        self.config = config
        self._lock = lock
        self._use_torch: bool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_workers = 0

    def candidates(
        self,
        snap: Snapshot,
        q: np.ndarray,
        k: int,
        filters: SearchFilters,
        first_stage_k: int | None,
        exact_k: int | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Stages 1 and 2 (in RAM): the rows whose multivectors stage 3 needs, with their stage scores."""
        cfg = self.config
        for name, v in (("first_stage_k", first_stage_k), ("exact_k", exact_k)):
            if v is not None and (not isinstance(v, int | np.integer) or v < 1):
                raise SearchError(f"{name} must be a positive integer, got {v!r}")
        c1 = first_stage_k or snap.first_stage_k or cfg.first_stage_k
        c2 = max(exact_k or cfg.exact_k, k)
        mask = snap.mask(filters) & (snap.tok_len > 0)
        if NOT_VISUAL:  # an audio item's picture is a drawn waveform, nothing a page/frame model should match
            mask &= ~snap.modality.mask(NOT_VISUAL)
        allowed = np.flatnonzero(mask)
        if not len(allowed):
            return allowed, {}

        # Stage 1: pooled vectors. Ranking by <mean(q), p> equals ranking by sum_i <q_i, p>.
        s1 = self.pooled_scores(snap, q.mean(axis=0), allowed)
        keep1 = self.top_idx(s1, c1)
        cand, s1c = allowed[keep1], s1[keep1]
        stage = {"pooled": s1c}

        # Stage 2: MaxSim over the int8 / float16 tokens held in RAM.
        if snap.tokens is not None and len(cand) > c2:
            s2 = self.token_maxsim(snap, q, cand)
            keep = _top_idx(s2, c2)
            cand, stage = cand[keep], {"pooled": s1c[keep], "tokens": s2[keep]}
        return cand, stage

    def exact(
        self,
        snap: Snapshot,
        q: np.ndarray,
        k: int,
        cand: np.ndarray,
        stage: dict[str, np.ndarray],
        fetched: dict[int, tuple[np.ndarray, str | None]],
    ) -> tuple[list[int], list[float], list[dict[str, float]], list[str | None]]:
        """Stage 3: exact float32 MaxSim over the candidates' multivectors (``fetched``: row -> (multivector, text)),
        top ``k``."""
        if not len(cand):
            return [], [], [], []
        empty = (np.zeros((0, snap.dim), np.float32), None)
        pairs = [fetched.get(int(r), empty) for r in cand]
        mvs, texts = [p[0] for p in pairs], [p[1] for p in pairs]
        ok = np.array([len(m) > 0 for m in mvs], dtype=bool)
        s3 = np.full(len(cand), -np.inf, np.float32)
        if ok.any():
            s3[ok] = self.exact_maxsim(q, [m for m, good in zip(mvs, ok, strict=True) if good])
        order = sorted(np.flatnonzero(ok).tolist(), key=lambda j: (-float(s3[j]), snap.ids[cand[j]]))[:k]
        rows = [int(cand[j]) for j in order]
        scores = [float(s3[j]) for j in order]
        stages = [{**{name: float(v[j]) for name, v in stage.items()}, "maxsim": float(s3[j])} for j in order]
        return rows, scores, stages, [texts[j] for j in order]

    def torch(self) -> bool:
        if self._use_torch is None:
            want = self.config.backend
            self._use_torch = want == "torch" or (want == "auto" and importlib.util.find_spec("torch") is not None)
        return self._use_torch

    def pooled_scores(self, snap: Snapshot, qmean: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """``<mean(q), pooled>`` of the allowed rows as float32 (whole-matrix product unless few rows are allowed).

        A memory-bound mat-vec over the collection (float16 pooled vectors: half the bytes of float32). In torch it runs
        in row blocks on the token stage's threads when torch itself is single-threaded (a Ray replica); numpy has no
        fast float16 maths, so its path converts a block at a time."""
        few = len(allowed) < snap.n // 4
        mat = snap.pooled[allowed] if few else snap.pooled
        out = np.empty(len(mat), np.float32)
        blocks = [(s, min(len(mat), s + POOLED_BLOCK)) for s in range(0, len(mat), POOLED_BLOCK)]
        if self.torch():
            import torch

            mt = torch.from_numpy(mat)
            qt = torch.from_numpy(np.ascontiguousarray(qmean, dtype=mat.dtype))

            def run(block: tuple[int, int]) -> None:
                s, e = block
                out[s:e] = torch.mv(mt[s:e], qt).numpy()

            workers = self.workers()
            if workers > 1 and len(blocks) > 1:
                list(self.pool(workers).map(run, blocks))
            else:
                out[:] = torch.mv(mt, qt).numpy()
        else:
            q32 = np.asarray(qmean, np.float32)
            for s, e in blocks:
                out[s:e] = mat[s:e].astype(np.float32, copy=False) @ q32
        return out if few else out[allowed]

    def top_idx(self, scores: np.ndarray, n: int) -> np.ndarray:
        """Indices of the ``n`` largest ``scores`` (unordered): torch's top-k when torch is the backend (3.5 ms for
        3000 of 1M, against 10 ms for numpy's argpartition)."""
        if n >= len(scores) or not self.torch():
            return _top_idx(scores, n)
        import torch

        return torch.topk(torch.from_numpy(scores), n, sorted=False).indices.numpy()

    def exact_maxsim(self, q: np.ndarray, mvs: list[np.ndarray]) -> np.ndarray:
        """Exact float32 MaxSim; the torch path computes what :func:`~mmrag.models.encoder.maxsim` does."""
        if not self.torch():
            return maxsim(q, mvs)
        import torch

        lens = np.array([len(m) for m in mvs], np.int64)
        seg = np.zeros(len(mvs), np.int64)
        seg[1:] = np.cumsum(lens)[:-1]
        sims = (torch.from_numpy(q) @ torch.from_numpy(np.concatenate(mvs)).T).numpy()
        return np.maximum.reduceat(sims, seg, axis=1).sum(axis=0, dtype=np.float64).astype(np.float32)

    def token_maxsim(self, snap: Snapshot, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """MaxSim of ``q`` against the candidates' quantised tokens, scored in cache-sized blocks."""
        order = np.argsort(snap.tok_start[cand], kind="stable")  # sequential reads through the token matrix
        starts, lens = snap.tok_start[cand][order], snap.tok_len[cand][order]
        seg = np.zeros(len(cand), np.int64)
        seg[1:] = np.cumsum(lens)[:-1]
        idx = _ranges(starts, lens)
        sims = self.token_sims(snap, q, idx)  # [n_q, M]
        best = np.maximum.reduceat(sims, seg, axis=1)
        out = np.empty(len(cand), np.float32)
        out[order] = best.sum(axis=0, dtype=np.float64)
        return out

    def token_sims(self, snap: Snapshot, q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``[n_q, len(idx)]`` similarities of the query to tokens ``idx``, dequantised block by block."""
        m = len(idx)
        sims = np.empty((q.shape[0], m), np.float32)
        blocks = [(s, min(m, s + TOKEN_BLOCK)) for s in range(0, m, TOKEN_BLOCK)]
        if self.torch():
            import torch

            toks, qt, it = torch.from_numpy(snap.tokens), torch.from_numpy(q), torch.from_numpy(idx)

            def run(block: tuple[int, int]) -> None:
                s, e = block
                sims[:, s:e] = torch.mm(toks.index_select(0, it[s:e]).float(), qt.T).numpy().T

        else:

            def run(block: tuple[int, int]) -> None:
                s, e = block
                sims[:, s:e] = q @ snap.tokens[idx[s:e]].astype(np.float32).T

        workers = self.workers()
        if workers > 1 and len(blocks) > 1:
            list(self.pool(workers).map(run, blocks))
        else:
            for block in blocks:
                run(block)
        if snap.tok_scale is not None:
            sims *= snap.tok_scale[idx]
        return sims

    def workers(self) -> int:
        """Threads for the token stage: its blocks are independent, so threads pull them from a shared queue.

        By default they are used only when torch runs single-threaded (as in a Ray replica, where
        ``OMP_NUM_THREADS`` is the replica's ``num_cpus``): stacking them on torch's own threads would oversubscribe.
        """
        if self.config.token_threads is not None:
            return self.config.token_threads
        if not self.torch():
            return 1
        import torch

        return (os.cpu_count() or 1) if torch.get_num_threads() == 1 else 1

    def pool(self, workers: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._executor_workers != workers:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(workers, thread_name_prefix="mmrag-search")
                self._executor_workers = workers
            return self._executor

    def close(self) -> None:
        """Stop the token-stage threads (the index stays usable; they restart on demand)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


__all__ = ["POOLED_BLOCK", "TOKEN_BLOCK", "Scorer"]
