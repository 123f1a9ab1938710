"""The gpu profile's architectures in miniature: a ColQwen2.5 shipped as a PEFT adapter over a separate base (as
vidore/colqwen2.5-v0.2 is) and a Qwen2.5-VL generator, in the published checkpoints' layout, loaded the way
production loads them.

The adapter must reach the model through ``ColQwen2_5.from_pretrained(<adapter dir>)`` (the encoder's code path)
with every tensor in place: colpali-engine has twice shipped releases where the published ColQwen weights loaded
"successfully" with parts silently left random (colpali #413: embed_tokens/norm; #424: every LoRA tensor)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmrag.config import TINY_COLQWEN2_5, TINY_COLQWEN2_5_BASE, TINY_QWEN2_5_VL, ModelsConfig, load_config
from mmrag.models.encoder import ColPaliEncoder, maxsim
from mmrag.models.tiny import ADAPTER_WEIGHTS_NAME, SPECS, WEIGHTS_NAME
from mmrag.models.tiny.specs import COLQWEN_LORA_TARGETS

pytestmark = pytest.mark.unit

#: LoRA'd modules per language-model layer (q, k, v, o, gate, up, down), plus the ColBERT head.
LORA_PER_LAYER = 7


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return list(f.keys())


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def _encoder(tiny_dir: Path, model: str, **retriever) -> ColPaliEncoder:
    """Loaded through the config tree as the retriever deployment and the ingest stages load it."""
    cfg = ModelsConfig(
        tiny_dir=str(tiny_dir),
        retriever={"model": model, "family": "colqwen2_5", "dtype": "float32", "device": "cpu", **retriever},
    )
    return ColPaliEncoder.from_config(cfg)


@pytest.fixture(scope="module")
def adapter_encoder(tiny_dir: Path) -> ColPaliEncoder:
    return _encoder(tiny_dir, f"tiny:{TINY_COLQWEN2_5}")


@pytest.fixture(scope="module")
def base_encoder(tiny_dir: Path) -> ColPaliEncoder:
    return _encoder(tiny_dir, f"tiny:{TINY_COLQWEN2_5_BASE}")


# ---------------------------------------------------------------------------------------------------- layout
def test_the_adapter_is_laid_out_as_the_published_one(tiny_dir: Path) -> None:
    adapter = tiny_dir / TINY_COLQWEN2_5
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "FEATURE_EXTRACTION"
    assert config["target_modules"] == COLQWEN_LORA_TARGETS and config["init_lora_weights"] == "gaussian"
    assert config["inference_mode"] is True
    # transformers hands this to from_pretrained as it is: an absolute path to the base built beside it
    assert config["base_model_name_or_path"] == str((tiny_dir / TINY_COLQWEN2_5_BASE).resolve())

    keys = _keys(adapter / ADAPTER_WEIGHTS_NAME)
    layers = SPECS[TINY_COLQWEN2_5_BASE]["text"]["num_hidden_layers"]
    assert len(keys) == 2 * (layers * LORA_PER_LAYER + 1)
    # PEFT's prefix over the pre-transformers-5 module names, as vidore's adapters were saved
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    assert "base_model.model.custom_text_proj.lora_B.weight" in keys
    assert all(k.startswith("base_model.model.") for k in keys)
    assert not [k for k in keys if "language_model" in k or "visual" in k]
    for name, t in _tensors(adapter / ADAPTER_WEIGHTS_NAME).items():
        assert t.abs().max() > 0, f"{name} is all zeros: the adapter would change nothing"


def test_the_base_and_the_generator_use_the_published_weight_names(tiny_dir: Path) -> None:
    base = _keys(tiny_dir / TINY_COLQWEN2_5_BASE / WEIGHTS_NAME)
    assert {"model.embed_tokens.weight", "model.norm.weight", "custom_text_proj.weight"} <= set(base)
    assert "model.layers.1.self_attn.q_proj.weight" in base and "visual.blocks.0.attn.qkv.weight" in base
    generator = _keys(tiny_dir / TINY_QWEN2_5_VL / WEIGHTS_NAME)
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= set(generator)
    assert "visual.merger.mlp.0.weight" in generator and "visual.blocks.1.mlp.gate_proj.weight" in generator
    for keys in (base, generator):
        assert not [k for k in keys if k.startswith(("language_model.", "model.language_model.", "model.visual."))]
    config = json.loads((tiny_dir / TINY_QWEN2_5_VL / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["vision_config"]["fullatt_block_indexes"] == [1]  # one windowed and one full-attention block


# ----------------------------------------------------------------------------------------- production loading
def _lora_name(file_key: str) -> str:
    """The loaded parameter an adapter tensor must land in (transformers 5 names, PEFT's adapter name)."""
    k = file_key.removeprefix("base_model.model.")
    if k.startswith("model."):
        k = "language_model." + k[len("model.") :]
    return k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")


def test_the_adapter_loads_through_the_production_path_with_every_tensor(
    adapter_encoder: ColPaliEncoder, tiny_dir: Path
) -> None:
    import torch
    from colpali_engine.models import ColQwen2_5

    model = adapter_encoder.model
    # (not model.active_adapters(): transformers 5.25 wants peft >= 0.22 there, colpali-engine 0.3.18 pins < 0.21;
    # load_adapter itself has no such check)
    assert type(model) is ColQwen2_5 and list(model.peft_config) == ["default"]
    assert model.peft_config["default"].base_model_name_or_path == str((tiny_dir / TINY_COLQWEN2_5_BASE).resolve())
    state = model.state_dict()

    lora = {k: v for k, v in state.items() if ".lora_" in k}
    saved = _tensors(tiny_dir / TINY_COLQWEN2_5 / ADAPTER_WEIGHTS_NAME)
    assert {_lora_name(k) for k in saved} == set(lora), "adapter tensors missing or left unloaded"
    for key, tensor in saved.items():
        assert torch.equal(lora[_lora_name(key)], tensor), key

    # and the base under it: every weight of the model comes from the base checkpoint, none was left at its random
    # init (a module the LoRA wraps keeps its weight as base_layer)
    loaded = set()
    for key, tensor in _tensors(tiny_dir / TINY_COLQWEN2_5_BASE / WEIGHTS_NAME).items():
        name = "language_model." + key[len("model.") :] if key.startswith("model.") else key
        if name not in state:
            module, _, param = name.rpartition(".")
            name = f"{module}.base_layer.{param}"
        assert torch.equal(state[name], tensor), key
        loaded.add(name)
    assert loaded == set(state) - set(lora)


def test_the_adapter_changes_what_the_base_embeds(
    adapter_encoder: ColPaliEncoder, base_encoder: ColPaliEncoder, page_images: list
) -> None:
    queries = ["what was the revenue growth?", "bar chart of sales"]
    with_adapter = adapter_encoder.embed_images(page_images) + adapter_encoder.embed_queries(queries)
    base_only = base_encoder.embed_images(page_images) + base_encoder.embed_queries(queries)
    for a, b in zip(with_adapter, base_only, strict=True):
        assert a.shape == b.shape and a.shape[1] == 128  # same processor, same tokens
        assert np.isfinite(a).all() and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
        assert np.abs(a - b).max() > 0.05, "the LoRA adapter left the embeddings unchanged"
    scores = [maxsim(q, with_adapter[:2]) for q in with_adapter[2:]]
    base_scores = [maxsim(q, base_only[:2]) for q in base_only[2:]]
    assert not np.allclose(scores, base_scores)


def test_the_gpu_tiny_encoder_embeds_pages_at_the_gpu_profiles_size(tiny_dir: Path) -> None:
    """The checkpoint's processor allows Qwen's 12.8 MP: the profile's max_image_pixels (768 visual tokens on the
    gpu profile too) is what bounds a page, through cap_image_pixels."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    r = load_config("gpu-tiny", use_env=False).models.retriever
    assert (r.family, r.attn_implementation, r.max_image_pixels) == ("colqwen2_5", "eager", 768 * 28 * 28)
    enc = _encoder(tiny_dir, r.model, attn_implementation=r.attn_implementation, max_image_pixels=r.max_image_pixels)
    page = Image.new("RGB", (1224, 1584), "white")  # a letter page at 144 dpi
    ImageDraw.Draw(page).rectangle((100, 100, 800, 400), fill="navy")
    (emb,) = enc.embed_images([page])
    h, w = smart_resize(1584, 1224, factor=28, min_pixels=56 * 56, max_pixels=r.max_image_pixels)
    visual = h * w // (28 * 28)
    assert 700 <= visual <= 768
    prompt = enc.processor.tokenizer(enc.processor.visual_prompt_prefix, add_special_tokens=False)["input_ids"]
    assert emb.shape == (visual + len(prompt) - 1, 128)  # the one <|image_pad|> of the prompt became `visual`
    (q,) = enc.embed_queries(["revenue by quarter"])
    assert q.shape[1] == 128 and np.isfinite(q).all() and np.isfinite(maxsim(q, [emb])).all()


def test_the_qwen2_5_vl_generator_loads_every_weight_and_generates(tiny_dir: Path, page_images: list) -> None:
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path = tiny_dir / TINY_QWEN2_5_VL
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    saved = _tensors(path / WEIGHTS_NAME)
    assert torch.equal(model.lm_head.weight, saved["lm_head.weight"])
    assert torch.equal(model.model.language_model.embed_tokens.weight, saved["model.embed_tokens.weight"])
    proc = AutoProcessor.from_pretrained(path)
    assert type(proc).__name__ == "Qwen2_5_VLProcessor"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Summarise the page."}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[prompt], images=[page_images[1]], return_tensors="pt")
    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == t * h * w // 4
    with torch.inference_mode():
        out = model.eval().generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
