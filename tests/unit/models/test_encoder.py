"""ColPaliEncoder and exact MaxSim: maths on hand-written tensors, padding removal, hostile image shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.config import ModelsConfig
from mmrag.models.encoder import (
    MAX_ASPECT_RATIO,
    ColPaliEncoder,
    ModelNotAvailableError,
    clamp_aspect_ratio,
    maxsim,
    to_rgb,
)

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------------------ maxsim
def test_maxsim_sums_best_dot_product_per_query_token() -> None:
    query = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    doc = np.array([[0.2, 0.9], [0.7, -0.1], [0.5, 0.5]], dtype=np.float32)
    # q0: max(0.2, 0.7, 0.5) = 0.7; q1: max(0.9, -0.1, 0.5) = 0.9; q2: max(0.84, 0.34, 0.7) = 0.84
    np.testing.assert_allclose(maxsim(query, [doc]), [0.7 + 0.9 + 0.84], rtol=1e-6)


def test_maxsim_ignores_padding_where_colpali_engine_does_not() -> None:
    import torch
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    query = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    short = np.array([[-1.0, 0.5]], dtype=np.float32)  # one real token: q0 -> -1.0, q1 -> 0.5
    long = np.array([[0.2, 0.3], [0.1, -0.4]], dtype=np.float32)  # q0 -> 0.2, q1 -> 0.3
    exact = maxsim(query, [short, long])
    np.testing.assert_allclose(exact, [-0.5, 0.5], rtol=1e-6)

    # colpali-engine pads `short` with a zero row, so q0 matches the padding (0.0 > -1.0): 0.5 instead of -0.5,
    # and the short page ties with the long one although it is the worse match.
    padded = BaseVisualRetrieverProcessor.score_multi_vector(
        [torch.from_numpy(query)], [torch.from_numpy(short), torch.from_numpy(long)], device="cpu"
    ).numpy()[0]
    np.testing.assert_allclose(padded, [0.5, 0.5], rtol=1e-6)
    assert exact[0] < exact[1]


def test_maxsim_blocks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmrag.models.encoder as enc

    rng = np.random.default_rng(0)
    query = rng.standard_normal((5, 8)).astype(np.float32)
    docs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 7, 3, 12, 2)]
    expected = [sum(max(float(q @ t) for t in d) for q in query) for d in docs]
    np.testing.assert_allclose(maxsim(query, docs), expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(enc, "_MAXSIM_BLOCK", 20)  # forces one or two documents per block
    np.testing.assert_allclose(maxsim(query, docs), expected, rtol=1e-5, atol=1e-5)


def test_maxsim_edge_cases() -> None:
    query = np.ones((2, 4), dtype=np.float32)
    assert maxsim(query, []).shape == (0,)
    with pytest.raises(ValueError, match="no tokens"):
        maxsim(query, [np.zeros((0, 4), dtype=np.float32)])
    with pytest.raises(ValueError, match="document 0"):
        maxsim(query, [np.zeros((3, 5), dtype=np.float32)])
    with pytest.raises(ValueError, match="2-D"):
        maxsim(np.ones(4, dtype=np.float32), [query])


# --------------------------------------------------------------------------------- padding removal (fake)
class _FakeProcessor:
    """Left-pads token ids like ColQwen2Processor; each token id becomes the embedding's first coordinate."""

    query_prefix = "Q:"
    query_augmentation_token = "+"

    def process_texts(self, texts: list[str]) -> dict:
        import torch

        width = max(len(t) for t in texts)
        ids = torch.zeros(len(texts), width, dtype=torch.long)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for i, t in enumerate(texts):
            ids[i, width - len(t) :] = torch.tensor([ord(c) for c in t])
            mask[i, width - len(t) :] = 1
        return {"input_ids": ids, "attention_mask": mask}


class _FakeModel:
    dim = 3

    def eval(self) -> _FakeModel:
        return self

    def __call__(self, input_ids, attention_mask):
        import torch

        emb = torch.full((*input_ids.shape, 3), 99.0)  # padding rows are garbage, never zeros
        emb[..., 0] = input_ids.float()
        emb[..., 1] = attention_mask.float()
        return emb


def test_padding_tokens_are_removed() -> None:
    enc = ColPaliEncoder(_FakeModel(), _FakeProcessor(), device="cpu", dtype="float32", batch_size=3)
    out = enc.embed_queries(["a", "hello", "xyz", "longest query"])  # two batches: 3 + 1
    assert [o.dtype for o in out] == [np.float32] * 4
    for q, emb in zip(["a", "hello", "xyz", "longest query"], out, strict=True):
        text = "Q:" + q + "+" * 10
        assert emb.shape == (len(text), 3)
        assert [chr(int(c)) for c in emb[:, 0]] == list(text)
        assert (emb[:, 1] == 1).all()


# ------------------------------------------------------------------------------------------- real model
def test_from_config_missing_tiny_says_how_to_build(tmp_path: Path) -> None:
    cfg = ModelsConfig(tiny_dir=str(tmp_path / "nothing-here"))
    with pytest.raises(ModelNotAvailableError, match="mmrag models build-tiny"):
        ColPaliEncoder.from_config(cfg)


def test_from_config_missing_local_path(tmp_path: Path) -> None:
    cfg = ModelsConfig.model_validate({"retriever": {"model": str(tmp_path / "no-such-model")}})
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        ColPaliEncoder.from_config(cfg)


def test_embed_images_and_queries(tiny_encoder: ColPaliEncoder, page_images: list[Image.Image]) -> None:
    docs = tiny_encoder.embed_images(page_images)
    queries = tiny_encoder.embed_queries(["revenue growth", "a bar chart of sales by year"])
    assert tiny_encoder.dim == 128
    for arr in docs + queries:
        assert arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == 128
        assert np.isfinite(arr).all()
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-4)  # no zeroed padding rows
    assert queries[0].shape[0] < queries[1].shape[0]
    scores = np.stack([maxsim(q, docs) for q in queries])
    assert scores.shape == (2, 2) and np.isfinite(scores).all()


def test_batched_equals_one_by_one(tiny_encoder: ColPaliEncoder, page_images: list[Image.Image]) -> None:
    """Left padding inside a batch must not change any real token's embedding (the sdpa NaN trap, FINDINGS)."""
    queries = ["x", "a much longer question about the quarterly revenue table"]
    batched = tiny_encoder.embed_queries(queries)
    for q, b in zip(queries, batched, strict=True):
        np.testing.assert_allclose(tiny_encoder.embed_queries([q])[0], b, atol=1e-4)

    images = [page_images[0], page_images[1].resize((560, 140))]  # different token counts -> padding
    batched = tiny_encoder.embed_images(images)
    assert batched[0].shape[0] != batched[1].shape[0]
    for im, b in zip(images, batched, strict=True):
        np.testing.assert_allclose(tiny_encoder.embed_images([im])[0], b, atol=1e-4)


def test_extreme_aspect_ratio_image_embeds(tiny_encoder: ColPaliEncoder) -> None:
    tall = Image.new("RGB", (8, 4000), "white")
    wide = Image.new("L", (4000, 8), 0)
    (emb_tall, emb_wide) = tiny_encoder.embed_images([tall, wide])
    for emb in (emb_tall, emb_wide):
        assert emb.shape[0] > 0 and emb.shape[1] == 128 and np.isfinite(emb).all()


def test_clamp_aspect_ratio_pads_only_when_needed() -> None:
    ok = Image.new("RGB", (100, 50))
    assert clamp_aspect_ratio(ok) is ok
    tall = Image.new("RGB", (8, 4000), "black")
    padded = clamp_aspect_ratio(tall)
    assert padded.size[1] == 4000 and max(padded.size) / min(padded.size) <= MAX_ASPECT_RATIO
    arr = np.asarray(padded)
    assert (arr == 0).all(axis=2).sum() == 8 * 4000  # every original pixel kept
    assert arr[:, 0].min() == 255  # padding is white


def test_to_rgb_handles_alpha_and_16_bit() -> None:
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    transparent.putpixel((1, 1), (0, 0, 0, 255))  # black text on a transparent background
    rgb = np.asarray(to_rgb(transparent))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 1].tolist() == [0, 0, 0]

    deep = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    grey = np.asarray(to_rgb(deep))[..., 0]
    assert grey[0, 0] == 0 and grey[1, 1] == 255 and 0 < grey[0, 1] < grey[1, 0] < 255


def test_max_image_pixels_caps_visual_tokens(tiny_dir: Path, page_images: list[Image.Image]) -> None:
    big = page_images[0].resize((896, 1120))
    full = ColPaliEncoder.from_config(ModelsConfig(tiny_dir=str(tiny_dir)))
    small = ColPaliEncoder.from_config(
        ModelsConfig.model_validate({"tiny_dir": str(tiny_dir), "retriever": {"max_image_pixels": 16 * 28 * 28}})
    )
    assert small.embed_images([big])[0].shape[0] < full.embed_images([big])[0].shape[0]
