"""The int8 copies of the token vectors stored beside the float32 multivectors: written with every item exactly as
the search index quantises them (their use by the search index: test_snapshot_refresh.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mmrag.store import tokens as T
from mmrag.store.cascade import quantise

pytestmark = pytest.mark.unit


def _mv_column(mvs: list[np.ndarray | None], dim: int) -> pa.Array:
    return pa.array([None if m is None else m.tolist() for m in mvs], pa.list_(pa.list_(pa.float32(), dim)))


def test_encode_matches_the_index_quantiser_and_decodes_back() -> None:
    rng = np.random.default_rng(0)
    mvs = [rng.standard_normal((k, 6)).astype(np.float32) for k in (3, 1, 7)]
    col = _mv_column([mvs[0], None, mvs[1], np.zeros((0, 6), np.float32), mvs[2]], 6)
    toks, scales = T.encode(col, 6)
    assert toks.null_count == 1 and scales.null_count == 1
    q, sc, lens, ok = T.decode(toks, scales, 6)
    assert ok.tolist() == [True, False, True, False, True]  # null and empty rows: read from the multivector
    assert lens.tolist() == [3, 1, 7]
    want_q, want_sc = quantise(np.concatenate(mvs), "int8")
    assert np.array_equal(q, want_q) and np.array_equal(sc, want_sc)
    # dequantised and quantised again: the same bytes (each token's largest value is +-127)
    q2, sc2 = quantise(T.dequantise(q, sc), "int8")
    assert np.array_equal(q2, q) and np.allclose(sc2, sc, rtol=1e-6)


def test_encode_splits_chunks_below_int32_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    mvs = [rng.standard_normal((int(k), 4)).astype(np.float32) for k in rng.integers(1, 9, 40)]
    col = _mv_column(mvs, 4)
    whole = T.encode(col, 4)
    monkeypatch.setattr(T, "_CHUNK_VALUES", 64)  # a few rows per chunk
    parts = T.encode(col, 4)
    assert parts[0].num_chunks > 5
    assert parts[0].to_pylist() == whole[0].to_pylist() and parts[1].to_pylist() == whole[1].to_pylist()


def test_mismatched_copies_are_not_trusted() -> None:
    toks = pa.array([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3]], pa.list_(pa.int8()))  # 2 tokens of dim 4; 3 values
    scales = pa.array([[0.5, 0.25], [1.0]], pa.list_(pa.float32()))
    q, _sc, lens, ok = T.decode(toks, scales, 4)
    assert ok.tolist() == [True, False] and q.shape == (2, 4) and lens.tolist() == [2]
