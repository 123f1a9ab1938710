"""The gpu profile's prompt for Qwen2.5-VL, checked against Qwen2.5-VL's own processor (the tiny checkpoint's, set
up as the generator deployment sets up vLLM's): the gateway's image sizes are the ones the model sees, and the
prompt it budgets is an upper bound of what the model counts."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mmrag.config import MmragConfig, load_config
from mmrag.imaging import IMAGE_UNIT
from mmrag.serve.prompt import build_prompt_sources, estimate_prompt_tokens, token_counter

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def gpu_tiny(mmrag_home: str) -> MmragConfig:
    from mmrag.models.tiny import build_tiny

    cfg = load_config("gpu-tiny", use_env=False)
    build_tiny(cfg.models.tiny_dir)
    return cfg


def _page_jpeg(n: int) -> bytes:
    """A stored page as ingestion keeps it (~1 MP JPEG of a letter page)."""
    img = Image.new("RGB", (880, 1139), "white")
    draw = ImageDraw.Draw(img)
    draw.text((60, 60), f"Page {n}: quarterly revenue", fill="black")
    draw.rectangle((100, 200 + 40 * n, 700, 400 + 40 * n), fill="teal")
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def test_qwen2_5_vl_sees_the_gateways_images_at_their_size_and_within_budget(gpu_tiny: MmragConfig) -> None:
    from transformers import AutoProcessor

    from mmrag.serve.generator import build_llm_config, is_vision_model

    cfg = gpu_tiny
    g = cfg.models.generator
    assert is_vision_model(cfg)  # detected from the tiny checkpoint's config.json, as for the real one
    contexts = [
        {
            "modality": "page",
            "source_uri": "/d/report.pdf",
            "page": n,
            "text": "revenue grew " * 400,
            "image": _page_jpeg(n),
        }
        for n in range(1, 8)
    ]
    count = token_counter(cfg)  # the generator's own tokenizer: prompt_tokens exact
    messages, used = build_prompt_sources("What does the chart on page 2 show?", contexts, cfg, count_tokens=count)
    parts = messages[-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert used == 7 and len(urls) == g.max_images_per_prompt == 5
    images = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).convert("RGB") for u in urls]
    for im in images:
        assert im.width % IMAGE_UNIT == 0 and im.height % IMAGE_UNIT == 0
        assert 0.9 * g.image_max_pixels <= im.width * im.height <= g.image_max_pixels  # ~1280 visual tokens

    # The model's side: the chat template and Qwen2.5-VL's processor with vLLM's processor kwargs from the deployment
    mm_kwargs = build_llm_config(cfg).engine_kwargs["mm_processor_kwargs"]
    proc = AutoProcessor.from_pretrained(Path(cfg.models.resolve(g.model)))
    assert type(proc).__name__ == "Qwen2_5_VLProcessor"
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 5
    inputs = proc(text=[text], images=images, return_tensors="pt", **mm_kwargs)
    # each image reached the model at exactly the gateway's size: one visual token per 28 x 28 pixels
    grids = inputs["image_grid_thw"].tolist()
    assert [(t, h * 14, w * 14) for t, h, w in grids] == [(1, im.height, im.width) for im in images]
    image_tokens = int((inputs["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert image_tokens == sum(im.width * im.height // IMAGE_UNIT**2 for im in images)
    # what the gateway budgeted bounds what the model counts, and the answer still fits the context
    total = inputs["input_ids"].shape[1]
    assert total <= estimate_prompt_tokens(messages, count) <= g.max_model_len - g.max_tokens
    assert total > image_tokens + 1000, "the snippets got the rest of the budget"
