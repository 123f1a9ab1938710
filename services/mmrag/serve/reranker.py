"""Reranker deployment: re-scores the retriever's candidates with a pluggable reranker.

``reranker.kind`` picks the implementation (:mod:`mmrag.models.rerankers`); ``reranker=`` injects one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from mmrag import constants
from mmrag.config import MmragConfig


def build_reranker(cfg: MmragConfig) -> Any:
    """The configured reranker, or None for ``kind: none``."""
    from mmrag.models import rerankers

    kind = cfg.reranker.kind
    if kind == "none":
        return None
    if kind == "maxsim":
        from mmrag.store import LanceStore

        store = LanceStore.from_config(cfg.store)
        return rerankers.MaxSimReranker(store.multivectors)
    if kind == "text-cross-encoder":
        from mmrag.config import TINY_CROSS_ENCODER, TINY_PREFIX
        from mmrag.models.encoder import resolve_device

        ref = cfg.reranker.model or f"{TINY_PREFIX}{TINY_CROSS_ENCODER}"
        if ref.startswith(TINY_PREFIX):
            from mmrag.models.tiny import build_tiny

            build_tiny(cfg.models.tiny_dir)
        return rerankers.CrossEncoderReranker.from_pretrained(
            cfg.models.resolve(ref), device=resolve_device(cfg.models.retriever.device)
        )
    raise ValueError(f"unknown reranker.kind {kind!r}")


@serve.deployment(name=constants.RERANKER_DEPLOYMENT)
class Reranker:
    def __init__(self, config: dict[str, Any], *, reranker: Any = None) -> None:
        self.cfg = MmragConfig.model_validate(config)
        self.reranker = reranker if reranker is not None else build_reranker(self.cfg)

    @property
    def needs_query_vectors(self) -> bool:
        return bool(self.reranker is not None and self.reranker.needs_query_vectors)

    async def info(self) -> dict[str, Any]:
        return {"kind": getattr(self.reranker, "name", "none"), "needs_query_vectors": self.needs_query_vectors}

    async def scores(self, query: str, query_mv: np.ndarray | None, candidates: list[dict[str, Any]]) -> list[float]:
        """The reranker's score of each candidate, in order (the gateway blends them with the fused order)."""
        if self.reranker is None or not candidates:
            return [0.0] * len(candidates)
        got = await asyncio.to_thread(self.reranker.score, query, query_mv, candidates)
        return [float(x) if np.isfinite(x) else -1e30 for x in got]

    async def rerank(
        self, query: str, query_mv: np.ndarray | None, candidates: list[dict[str, Any]], k: int
    ) -> list[dict[str, Any]]:
        """The top ``k`` of ``candidates`` by the reranker's score (``score`` replaced, stage score kept)."""
        if self.reranker is None or not candidates:
            return candidates[:k]
        pool = candidates[: self.cfg.reranker.candidates]
        scores = await asyncio.to_thread(self.reranker.score, query, query_mv, pool)
        ranked = []
        for c, s in zip(pool, scores, strict=True):
            c = dict(c)
            c.setdefault("stage_scores", {})[self.reranker.name] = float(s)
            c["score"] = float(s)
            ranked.append(c)
        ranked.sort(key=lambda c: c["score"], reverse=True)
        return [c for c in ranked if np.isfinite(c["score"])][:k]
