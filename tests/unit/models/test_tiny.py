"""The tiny offline checkpoints: deterministic, idempotent, tamper-evident, and loadable by colpali-engine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrag.config import TINY_COLQWEN2_5, TINY_COLQWEN2_5_BASE, TINY_GENERATOR, TINY_QWEN2_5_VL, TINY_RETRIEVER
from mmrag.models import tiny
from mmrag.models.encoder import maxsim
from mmrag.models.tiny import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    TinyModelError,
    build_tiny,
    verify_tiny,
    weights_name,
)

pytestmark = pytest.mark.unit


def _all_hashes(root: Path) -> dict[str, dict[str, str]]:
    """Each checkpoint's file hashes, an adapter's config hashed with its base's absolute path taken out (the only
    bytes that depend on where the tiny directory is)."""
    out = {}
    for name in tiny.SPECS:
        files = dict(json.loads((root / name / MANIFEST_NAME).read_text())["files"])
        if ADAPTER_CONFIG_NAME in files:
            config = json.loads((root / name / ADAPTER_CONFIG_NAME).read_text())
            assert config.pop("base_model_name_or_path") == str((root / tiny.SPECS[name]["base"]).resolve())
            files[ADAPTER_CONFIG_NAME] = json.dumps(config, sort_keys=True)
        out[name] = files
    return out


def _weights(root: Path, name: str) -> Path:
    return root / name / weights_name(tiny.SPECS[name])


def test_build_writes_every_checkpoint(tiny_dir: Path) -> None:
    for name in (TINY_RETRIEVER, TINY_GENERATOR, TINY_COLQWEN2_5_BASE, TINY_QWEN2_5_VL):
        ckpt = tiny_dir / name
        files = json.loads((ckpt / MANIFEST_NAME).read_text())["files"]
        assert WEIGHTS_NAME in files
        assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= set(files)
        assert verify_tiny(ckpt) == files[WEIGHTS_NAME]
    # the adapter holds no model of its own: adapter config and weights, processor and tokenizer (as on the hub)
    files = json.loads((tiny_dir / TINY_COLQWEN2_5 / MANIFEST_NAME).read_text())["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(files)
    assert "config.json" not in files and WEIGHTS_NAME not in files
    assert verify_tiny(tiny_dir / TINY_COLQWEN2_5) == files["adapter_model.safetensors"]
    # no temp or backup directories are left beside the checkpoints
    assert sorted(p.name for p in tiny_dir.iterdir() if p.is_dir()) == sorted(tiny.SPECS)


def test_second_call_is_present_not_rebuilt(tiny_dir: Path) -> None:
    before = {n: _weights(tiny_dir, n).stat().st_mtime_ns for n in tiny.SPECS}
    summary = build_tiny(tiny_dir)
    assert {n: s["status"] for n, s in summary.items()} == {n: "present" for n in tiny.SPECS}
    assert {n: _weights(tiny_dir, n).stat().st_mtime_ns for n in tiny.SPECS} == before


def test_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    summary = build_tiny(tmp_path / "again")
    assert all(s["status"] == "built" for s in summary.values())
    # every file, not just the weights, is byte-identical
    assert _all_hashes(tmp_path / "again") == _all_hashes(tiny_dir)
    assert summary[TINY_RETRIEVER]["sha256"] == verify_tiny(tiny_dir / TINY_RETRIEVER)
    assert summary[TINY_COLQWEN2_5]["sha256"] == verify_tiny(tiny_dir / TINY_COLQWEN2_5)
    # rebuilt where it stands, every byte is the same, the adapter's config (its base's absolute path) included
    raw = {n: json.loads((tmp_path / "again" / n / MANIFEST_NAME).read_text())["files"] for n in tiny.SPECS}
    assert all(s["status"] == "built" for s in build_tiny(tmp_path / "again", force=True).values())
    assert {n: json.loads((tmp_path / "again" / n / MANIFEST_NAME).read_text())["files"] for n in tiny.SPECS} == raw


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
    assert summary[TINY_COLQWEN2_5]["sha256"] != verify_tiny(tiny_dir / TINY_COLQWEN2_5)
    assert summary[TINY_QWEN2_5_VL]["sha256"] != verify_tiny(tiny_dir / TINY_QWEN2_5_VL)
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


def test_a_moved_adapter_is_refused_then_relinked_to_the_base_beside_it(tiny_dir: Path, tmp_path: Path) -> None:
    """The adapter names its base by absolute path (transformers resolves a relative one against the working
    directory): a copied tiny directory would load the original's base, so verification refuses it and the next
    build re-links it, rebuilding nothing else."""
    copy = tmp_path / "moved"
    shutil.copytree(tiny_dir, copy)
    with pytest.raises(TinyModelError, match=r"stale: .*names the base .*moved or copied.*build-tiny"):
        verify_tiny(copy / TINY_COLQWEN2_5)
    summary = build_tiny(copy)
    assert {n: s["status"] for n, s in summary.items()} == {
        n: "built" if n == TINY_COLQWEN2_5 else "present" for n in tiny.SPECS
    }
    config = json.loads((copy / TINY_COLQWEN2_5 / ADAPTER_CONFIG_NAME).read_text())
    assert config["base_model_name_or_path"] == str((copy / TINY_COLQWEN2_5_BASE).resolve())
    assert verify_tiny(copy / TINY_COLQWEN2_5) == summary[TINY_COLQWEN2_5]["sha256"]
    assert _all_hashes(copy) == _all_hashes(tiny_dir)

    # a base rebuilt differently (another seed) is not the one the adapter was made for: it is rebuilt too
    manifest = json.loads((copy / TINY_COLQWEN2_5_BASE / MANIFEST_NAME).read_text())
    manifest["files"][WEIGHTS_NAME] = "0" * 64
    (copy / TINY_COLQWEN2_5_BASE / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(TinyModelError, match="not the build the adapter was made for"):
        verify_tiny(copy / TINY_COLQWEN2_5)
