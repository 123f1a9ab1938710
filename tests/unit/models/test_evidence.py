"""Evidence regions: the patch-grid maths, the per-patch MaxSim heat and the box merging, on hand-written arrays."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.models import evidence as E

# ColQwen2's layout (measured on the tiny checkpoint: 4 prompt tokens, the patches, 10 prompt tokens)
LAYOUT = E.TokenLayout(
    prefix=4, suffix=10, patch_size=14, merge_size=2, min_pixels=3136, max_pixels=50176, query_suffix=10
)


@pytest.mark.parametrize(
    ("wh", "grid"),
    [((600, 800), (9, 6)), ((800, 600), (6, 9)), ((300, 2000), (20, 3))],  # what the processor made of them
)
def test_patch_grid_follows_the_processors_resize(wh: tuple[int, int], grid: tuple[int, int]) -> None:
    assert E.patch_grid(*wh, grid[0] * grid[1], LAYOUT) == grid


def test_smart_resize_matches_transformers() -> None:
    tr = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")
    for h, w in [(800, 600), (1100, 850), (56, 4000), (10, 10), (3000, 2000), (1584, 1224)]:
        assert E.smart_resize(h, w, 28, 3136, 50176) == tuple(tr.smart_resize(h, w, 28, 3136, 50176))


def test_patch_grid_falls_back_to_the_factorisation_closest_to_the_aspect_ratio() -> None:
    # the encoder saw a downscaled copy whose rounding gave a grid other than the stored size's 9 x 6
    assert E.patch_grid(600, 800, 56, LAYOUT) == (8, 7)
    assert E.patch_grid(600, 800, 7, LAYOUT) is None  # a prime count cannot be this page's grid
    assert E.patch_grid(600, 800, 0, LAYOUT) is None


def test_frame_patches_split_a_clip_into_its_frames() -> None:
    n = 4 + 54 + 10
    assert E.frame_patches(n, 1, LAYOUT) == [slice(4, 58)]
    assert E.frame_patches(3 * n, 3, LAYOUT) == [slice(4, 58), slice(n + 4, n + 58), slice(2 * n + 4, 2 * n + 58)]
    assert E.frame_patches(3 * n + 1, 3, LAYOUT) is None  # not equal frames: pooled or foreign tokens
    assert E.frame_patches(10, 1, LAYOUT) is None


def test_query_words_leave_out_augmentation_tokens() -> None:
    assert E.query_words(16, LAYOUT) == slice(0, 6)
    assert E.query_words(8, LAYOUT) == slice(0, 8)  # nothing but augmentation: keep all


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_patch_heat_puts_each_query_tokens_match_on_its_patch() -> None:
    rng = np.random.default_rng(0)
    doc = _unit(rng.normal(size=(2 + 12 + 1, 8)).astype(np.float32))
    q = doc[[2 + 5, 2 + 9]].copy()  # two query tokens equal to patches 5 and 9
    heat, chosen, share = E.patch_heat(q, doc, slice(2, 14), margin=0.0)
    assert chosen.tolist() == [5, 9]
    assert heat[5] == pytest.approx(1.0, abs=1e-5) and heat[9] == pytest.approx(1.0, abs=1e-5)
    assert share == pytest.approx(1.0)
    # a query token whose best match is a prompt token lowers the patches' share (its best patch still gets heat)
    q2 = np.concatenate([q, doc[[0]]])
    _, chosen2, share2 = E.patch_heat(q2, doc, slice(2, 14), margin=0.0)
    assert chosen2[:2].tolist() == [5, 9] and share2 == pytest.approx(2 / 3, abs=1e-5)
    # every similarity negative (random weights): the tokens' best patches are still counted
    away = _unit(-q[:1] + 0.3 * rng.normal(size=(12, 8)).astype(np.float32))  # every patch points away from q
    heat3, chosen3, share3 = E.patch_heat(q[:1], away, slice(0, 12), margin=0.0)
    assert heat3.sum() == 1 and heat3[chosen3[0]] == 1 and share3 == 0.0


def test_regions_merge_touching_patches_and_rank_by_heat() -> None:
    heat = np.zeros((4, 6), np.float32)
    heat[0, 0] = heat[0, 1] = heat[1, 1] = 1.0  # one L-shaped part, top left
    heat[3, 5] = 0.8  # a lone hot patch, bottom right
    heat[2, 3] = 0.1  # below the threshold
    out = E.regions(heat.ravel(), (4, 6), chosen=np.array([1, 23]), terms=["cup", "table"])
    assert len(out) == 2
    a, b = out
    assert (a["x0"], a["y0"], a["x1"], a["y1"]) == (0.0, 0.0, pytest.approx(2 / 6), 0.5)
    assert a["score"] == pytest.approx(3 / 3.9, abs=1e-3) and a["terms"] == ["cup"]
    assert (b["x0"], b["y0"], b["x1"], b["y1"]) == (pytest.approx(5 / 6), 0.75, 1.0, 1.0)
    assert b["terms"] == ["table"]
    assert E.regions(np.zeros(24, np.float32), (4, 6)) == []
    # near-uniform heat (as from random weights) gives a few small boxes, never the whole page
    noisy = np.random.default_rng(2).uniform(0.9, 1.0, size=32 * 24).astype(np.float32)
    boxes = E.regions(noisy, (32, 24))
    assert 1 <= len(boxes) <= 4
    assert sum((b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) for b in boxes) <= 0.15 + 1e-6


def test_merge_boxes_unions_overlapping_and_touching_boxes_only() -> None:
    assert E.merge_boxes([[0, 0, 2, 2], [1, 1, 3, 3]]) == [[0, 0, 3, 3]]
    # a merge that grows a box can make it overlap a third
    assert sorted(E.merge_boxes([[0, 0, 0, 1], [0, 4, 0, 5], [0, 1, 0, 4]])) == [[0, 0, 0, 5]]
    # boxes that only touch stay apart: merging them would chain scattered parts into one page-sized box
    assert sorted(E.merge_boxes([[0, 0, 1, 1], [2, 2, 3, 3]])) == [[0, 0, 1, 1], [2, 2, 3, 3]]


def test_regions_are_mapped_back_from_a_padded_image() -> None:
    # a 100 x 20000 strip was padded to 134 x 20000 (max ratio 150): a box over the whole grid is the whole strip
    vis = E.visible_part(100, 20000, 150.0)
    assert vis[0] == pytest.approx(17 / 134) and vis[2] == pytest.approx(117 / 134)
    out = E.regions(np.ones(4, np.float32), (2, 2), visible=vis, threshold=0.5)
    assert out[0]["x0"] == 0.0 and out[0]["x1"] == 1.0


def test_item_regions_for_a_clip_give_one_entry_per_frame() -> None:
    rng = np.random.default_rng(1)
    per = 4 + 54 + 10
    doc = _unit(rng.normal(size=(2 * per, 16)).astype(np.float32))
    q = _unit(np.concatenate([doc[[per + 4 + 7]], rng.normal(size=(10, 16)).astype(np.float32)]))
    out = E.item_regions(q, doc, width=600, height=800, n_frames=2, layout=LAYOUT, terms=["cup"])
    assert out is not None and out["grid"] == [9, 6] and [f["frame"] for f in out["frames"]] == [0, 1]
    best = out["frames"][1]["regions"][0]
    # patch 7 of a 9 x 6 grid: row 1, column 1
    assert best["x0"] <= 1 / 6 < best["x1"] and best["y0"] <= 1 / 9 < best["y1"] and best["terms"] == ["cup"]
    assert E.item_regions(q, doc[:-1], width=600, height=800, n_frames=2, layout=LAYOUT) is None


def test_highlights_mark_query_words_in_the_snippet() -> None:
    text = "The permutation tests assume exchangeability; a Permutation is a reordering."
    spans = E.highlights(text, "What does the permutation test assume?")
    assert [text[s:e] for s, e in spans] == ["permutation", "tests", "assume", "Permutation"]
    assert E.highlights(text, "the of") == []
