"""Stage sizes chosen for a recall target (mmrag.store.calibrate): measured on the collection at load, recorded in
the snapshot, growing with the target, and overridden by a query's own first_stage_k."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.models.encoder import maxsim
from mmrag.store.search import SearchFilters, SearchIndex

pytestmark = pytest.mark.unit
DIM = 16


def _corpus(n: int, seed: int = 0) -> list[np.ndarray]:
    """Clustered items: 6-12 tokens around a few of 20 topic centres each, plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    out = []
    for _ in range(n):
        picks = centres[rng.integers(0, 20, 3)]
        toks = picks[rng.integers(0, 3, int(rng.integers(6, 13)))] + 0.7 * rng.standard_normal((1, DIM))
        toks = toks + 0.5 * rng.standard_normal(toks.shape)
        out.append((toks / np.linalg.norm(toks, axis=1, keepdims=True)).astype(np.float32))
    return out


def test_first_stage_k_is_chosen_for_the_recall_target_and_meets_it() -> None:
    mvs = _corpus(600)
    ids = [f"i{j:04d}" for j in range(len(mvs))]
    cfg = {
        "calibration_shortlist": 100,  # below the 600 items: the deepening path runs
        "calibration_queries": 12,
        "calibration_noise": 1.0,
        "exact_k": 10,
        "backend": "numpy",
    }
    low = SearchIndex.from_arrays(ids, mvs, collection="c", config={**cfg, "recall_target": 0.5})
    high = SearchIndex.from_arrays(ids, mvs, collection="c", config={**cfg, "recall_target": 0.99})
    cal = high._snap.loaded["calibration"]
    assert cal["first_stage_k"] == high._snap.first_stage_k and cal["items"] == 600
    assert cal["shortlists"][0] >= 100 and max(cal["shortlists"]) <= 600 and cal["capped_queries"] == 0
    assert 10 <= low._snap.first_stage_k < high._snap.first_stage_k <= 600
    # the chosen size, measured: the cascade's recall@10 against exact MaxSim on queries made like the calibration's
    rng = np.random.default_rng(5)
    f = SearchFilters(collection="c")
    rec = []
    for j in rng.choice(len(mvs), 12, replace=False):
        q = mvs[j][rng.integers(0, len(mvs[j]), 8)] + rng.standard_normal((8, DIM)).astype(np.float32) / 4
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
        truth = set(np.argsort(-maxsim(q, mvs), kind="stable")[:10].tolist())
        got = {int(h.id[1:]) for h in high.search_visual(q, 10, filters=f)}
        rec.append(len(got & truth) / 10)
    assert np.mean(rec) >= 0.9, rec
    # a query's own first_stage_k still wins over the chosen one
    q = mvs[0][:4]
    cand, _ = high._scorer.candidates(high._snap, q, 10, f, 12, 10)
    assert len(cand) == 10


def test_without_a_recall_target_the_configured_size_is_used() -> None:
    index = SearchIndex.from_arrays(["a", "b"], _corpus(2), collection="c", config={"first_stage_k": 7})
    assert index._snap.first_stage_k is None and "calibration" not in index._snap.loaded


def test_the_retriever_config_reaches_the_index_config() -> None:
    from mmrag.config import RetrieverConfig
    from mmrag.store.search_config import SearchIndexConfig

    cfg = SearchIndexConfig.model_validate(
        RetrieverConfig(recall_target=0.9, token_tier="disk", token_dir="/data/tok").index_config()
    )
    assert (cfg.recall_target, cfg.token_tier, cfg.token_dir) == (0.9, "disk", "/data/tok")
