"""Which fusion weights, fusion method and reranker weight a search uses: one precedence rule for every caller.

Precedence: the request's explicit values, then the config's (``retriever.fusion_weights``,
``retriever.fusion_method``, ``reranker.weight``), then the collection's calibration, then the uncalibrated
defaults (``calibration.default_weights``, RRF, no reranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmrag.config import MmragConfig, check_weights


@dataclass(frozen=True)
class Fusion:
    weights: dict[str, float]
    method: str
    rerank_weight: float
    source: str  # request | config | calibration | default: where the weights came from


def resolve(
    cfg: MmragConfig,
    record: Mapping[str, Any] | None,
    *,
    weights: Mapping[str, float] | None = None,
    method: str | None = None,
    rerank: bool | None = None,
    rerank_weight: float | None = None,
) -> Fusion:
    """The fusion settings of one search (see the module docstring for the order)."""
    calibrated = record if record and record.get("weights") else None
    if weights is not None:
        w, source = check_weights(dict(weights)), "request"
    elif cfg.retriever.fusion_weights is not None:
        w, source = dict(cfg.retriever.fusion_weights), "config"
    elif calibrated is not None:
        w, source = dict(calibrated["weights"]), "calibration"
    else:
        w, source = dict(cfg.calibration.default_weights), "default"
    assert w is not None
    m = method or cfg.retriever.fusion_method or (calibrated or {}).get("fusion") or "rrf"
    if rerank is False or cfg.reranker.kind == "none":
        rw = 0.0
    elif rerank_weight is not None:
        rw = float(rerank_weight)
    elif cfg.reranker.weight is not None:
        rw = float(cfg.reranker.weight)
    else:
        rw = float(((record or {}).get("reranker") or {}).get("weight") or 0.0)
    return Fusion(weights=w, method=m, rerank_weight=rw, source=source)


__all__ = ["Fusion", "resolve"]
