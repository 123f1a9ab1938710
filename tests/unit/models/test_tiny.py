"""The tiny offline checkpoints: deterministic, idempotent, tamper-evident, and loadable by colpali-engine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrag.config import TINY_GENERATOR, TINY_RETRIEVER
from mmrag.models import tiny
from mmrag.models.encoder import maxsim
from mmrag.models.tiny import MANIFEST_NAME, WEIGHTS_NAME, TinyModelError, build_tiny, verify_tiny

pytestmark = pytest.mark.unit


def _all_hashes(root: Path) -> dict[str, dict[str, str]]:
    return {name: json.loads((root / name / MANIFEST_NAME).read_text())["files"] for name in tiny.SPECS}


def test_build_writes_both_checkpoints(tiny_dir: Path) -> None:
    for name in (TINY_RETRIEVER, TINY_GENERATOR):
        ckpt = tiny_dir / name
        files = json.loads((ckpt / MANIFEST_NAME).read_text())["files"]
        assert WEIGHTS_NAME in files
        assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= set(files)
        assert verify_tiny(ckpt) == files[WEIGHTS_NAME]
    # no temp or backup directories are left beside the checkpoints
    assert sorted(p.name for p in tiny_dir.iterdir() if p.is_dir()) == sorted(tiny.SPECS)


def test_second_call_is_present_not_rebuilt(tiny_dir: Path) -> None:
    before = {n: (tiny_dir / n / WEIGHTS_NAME).stat().st_mtime_ns for n in tiny.SPECS}
    summary = build_tiny(tiny_dir)
    assert {n: s["status"] for n, s in summary.items()} == {n: "present" for n in tiny.SPECS}
    assert {n: (tiny_dir / n / WEIGHTS_NAME).stat().st_mtime_ns for n in tiny.SPECS} == before


def test_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    summary = build_tiny(tmp_path / "again")
    assert all(s["status"] == "built" for s in summary.values())
    # every file, not just the weights, is byte-identical
    assert _all_hashes(tmp_path / "again") == _all_hashes(tiny_dir)
    assert summary[TINY_RETRIEVER]["sha256"] == verify_tiny(tiny_dir / TINY_RETRIEVER)


def test_corrupted_weights_are_detected_and_force_repairs(tiny_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_dir, copy)
    weights = copy / TINY_RETRIEVER / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(TinyModelError, match=r"model\.safetensors: sha256 differs.*--force"):
        verify_tiny(copy / TINY_RETRIEVER)
    with pytest.raises(TinyModelError, match="corrupted"):
        build_tiny(copy)

    summary = build_tiny(copy, force=True)
    assert {n: s["status"] for n, s in summary.items()} == {n: "built" for n in tiny.SPECS}
    assert _all_hashes(copy) == _all_hashes(tiny_dir)


def test_other_seed_rebuilds_with_other_weights(tiny_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_dir, copy)
    summary = build_tiny(copy, seed=1)
    assert all(s["status"] == "built" for s in summary.values())
    assert summary[TINY_RETRIEVER]["sha256"] != verify_tiny(tiny_dir / TINY_RETRIEVER)
    assert json.loads((copy / TINY_RETRIEVER / MANIFEST_NAME).read_text())["seed"] == 1


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(tmp: Path, *args: object) -> None:
        (tmp / "config.json").write_text("{}")
        (tmp / WEIGHTS_NAME).write_bytes(b"partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of save_pretrained

    monkeypatch.setitem(tiny._WRITERS, "colqwen2", half_write)
    with pytest.raises(KeyboardInterrupt):
        build_tiny(tmp_path)
    assert not (tmp_path / TINY_RETRIEVER).exists()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]

    # A build killed too hard to clean up (kill -9) leaves its temp dir; the next build removes it.
    monkeypatch.undo()
    (tmp_path / f".{TINY_RETRIEVER}.building-123-abcd").mkdir()
    (tmp_path / f".{TINY_RETRIEVER}.building-123-abcd" / WEIGHTS_NAME).write_bytes(b"partial")
    assert all(s["status"] == "built" for s in build_tiny(tmp_path).values())
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(tiny.SPECS)


def test_tokenizer_and_chat_template(tiny_dir: Path) -> None:
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_dir / TINY_GENERATOR)
    tok = proc.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(tiny.SPECIAL_TOKENS)
    # special tokens are atomic, ordinary text round-trips through the byte-level BPE
    assert tok("<|vision_start|><|image_pad|><|vision_end|>")["input_ids"] == [
        ids["<|vision_start|>"],
        ids["<|image_pad|>"],
        ids["<|vision_end|>"],
    ]
    text = "Revenue grew by 12% in Q3 — see Table 2 (ünïcødé)."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert 1000 <= len(tok) <= 2100

    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "video"},
                {"type": "text", "text": "What does the chart show?"},
            ],
        }
    ]
    rendered = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>"
        "What does the chart show?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generator_loads_and_generates_with_transformers(tiny_dir: Path, page_images: list) -> None:
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    path = tiny_dir / TINY_GENERATOR
    model = Qwen2VLForConditionalGeneration.from_pretrained(path).eval()
    proc = AutoProcessor.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Summarise the page."}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[prompt], images=[page_images[1]], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_colpali_engine_loads_retriever_offline_and_scores(tiny_dir: Path, page_images: list) -> None:
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    path = tiny_dir / TINY_RETRIEVER
    model = ColQwen2.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    processor = ColQwen2Processor.from_pretrained(path)

    with torch.inference_mode():
        batch_images = processor.process_images(page_images)
        image_emb = model(**batch_images)
        batch_queries = processor.process_queries(["what was the revenue growth?", "bar chart of sales"])
        query_emb = model(**batch_queries)
    assert image_emb.shape[0] == 2 and image_emb.shape[2] == 128
    assert query_emb.shape[0] == 2 and query_emb.shape[2] == 128

    colpali_scores = processor.score_multi_vector(list(query_emb), list(image_emb)).numpy()
    assert colpali_scores.shape == (2, 2)
    assert np.isfinite(colpali_scores).all()

    # Same-size pages carry no padding, so the exact score must agree with colpali-engine's here.
    docs = [e[m.bool()].numpy() for e, m in zip(image_emb, batch_images["attention_mask"], strict=True)]
    queries = [e[m.bool()].numpy() for e, m in zip(query_emb, batch_queries["attention_mask"], strict=True)]
    assert docs[0].shape == docs[1].shape
    exact = np.stack([maxsim(q, docs) for q in queries])
    assert exact.shape == (2, 2) and np.isfinite(exact).all()
    np.testing.assert_allclose(exact, colpali_scores, rtol=1e-5, atol=1e-5)
    # and with a by-hand loop over tokens
    by_hand = [[sum(max(float(qt @ dt) for dt in d) for qt in q) for d in docs] for q in queries]
    np.testing.assert_allclose(exact, by_hand, rtol=1e-5, atol=1e-5)


def test_maxsim_on_hand_written_tensors() -> None:
    query = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    docs = [
        np.array([[0.5, 0.5], [1.0, -1.0]], dtype=np.float32),  # q0 -> 1.0, q1 -> 0.5
        np.array([[-2.0, -3.0]], dtype=np.float32),  # q0 -> -2.0, q1 -> -3.0
    ]
    np.testing.assert_allclose(maxsim(query, docs), [1.5, -5.0])
