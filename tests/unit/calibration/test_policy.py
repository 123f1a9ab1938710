"""Which weights a search uses: request, then config, then the collection's calibration, then the defaults."""

from __future__ import annotations

import pytest

from mmrag.calibration.policy import resolve
from mmrag.config import MmragConfig

pytestmark = pytest.mark.unit

REC = {"weights": {"bm25": 0.4, "dense": 0.6}, "fusion": "score", "reranker": {"weight": 0.5}}


def test_calibration_applies_when_nothing_is_explicit() -> None:
    got = resolve(MmragConfig(), REC)
    assert got.weights == REC["weights"] and got.method == "score" and got.rerank_weight == 0.5
    assert got.source == "calibration"


def test_uncalibrated_collections_use_the_defaults_and_skip_the_reranker() -> None:
    cfg = MmragConfig()
    got = resolve(cfg, None)
    assert got.weights == cfg.calibration.default_weights and got.method == "rrf" and got.rerank_weight == 0.0
    assert got.source == "default"
    failed = resolve(cfg, {"status": "uncalibrated", "weights": None})
    assert failed.source == "default"


def test_config_beats_calibration_and_request_beats_both() -> None:
    cfg = MmragConfig.model_validate(
        {"retriever": {"fusion_weights": {"visual": 1, "bm25": 1}, "fusion_method": "rrf"}, "reranker": {"weight": 1}}
    )
    got = resolve(cfg, REC)
    assert got.weights == {"visual": 0.5, "bm25": 0.5} and got.method == "rrf" and got.rerank_weight == 1.0
    assert got.source == "config"
    req = resolve(cfg, REC, weights={"dense": 2.0}, method="score", rerank_weight=0.25)
    assert req.weights == {"dense": 1.0} and req.method == "score" and req.rerank_weight == 0.25
    assert req.source == "request"
    assert resolve(cfg, REC, rerank=False).rerank_weight == 0.0  # rerank: false always wins
    none = MmragConfig.model_validate({"reranker": {"kind": "none"}})
    assert resolve(none, REC).rerank_weight == 0.0


def test_bad_weights_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least one fusion weight must be positive"):
        resolve(MmragConfig(), None, weights={"bm25": 0.0})
    with pytest.raises(ValueError, match="finite number"):
        MmragConfig.model_validate({"retriever": {"fusion_weights": {"bm25": -1}}})
    with pytest.raises(ValueError):
        MmragConfig.model_validate({"retriever": {"fusion_weights": {"colbert": 1}}})
