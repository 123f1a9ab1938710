"""What each tiny checkpoint is: its architecture (:data:`SPECS`), its files, and the transformers configs and
processors built from a spec.

A spec is recorded in the checkpoint's manifest: changing one rebuilds that checkpoint (and only that one), so the
entries of existing checkpoints stay as they are unless their files are meant to change.
"""

from __future__ import annotations

from typing import Any

from mmrag.config import (
    TINY_COLQWEN2_5,
    TINY_COLQWEN2_5_BASE,
    TINY_CROSS_ENCODER,
    TINY_GENERATOR,
    TINY_QWEN2_5_VL,
    TINY_RETRIEVER,
)
from mmrag.models.tiny.tokenizer import SPECIAL_TOKENS

MANIFEST_NAME = "mmrag-tiny.json"
WEIGHTS_NAME = "model.safetensors"
#: A PEFT adapter's weights (what vidore/colqwen2.5-v0.2 ships instead of a model.safetensors).
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"


class TinyModelError(RuntimeError):
    """A tiny checkpoint is missing files or its files do not match its manifest."""


#: Pixel bounds of the first tiny image processors (colqwen2, qwen2-vl): 4 to 64 merged visual tokens per image.
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 64 * 28 * 28
#: Qwen2-VL / Qwen2.5-VL's own processor bounds (their preprocessor_config.json: 3136 to 12845056 pixels). The
#: Qwen2.5 checkpoints carry them, so that, as on a GPU, the profile's ``max_image_pixels`` (encoder) and
#: ``image_max_pixels`` (vLLM's mm_processor_kwargs) are what bound an image.
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 16384 * 28 * 28

#: The LoRA of vidore/colqwen2.5-v0.2 (colpali-engine's scripts/configs/qwen2/train_colqwen25_model.py): every
#: projection of the language model and the ColBERT head, never the vision tower. Rank and alpha are smaller here.
COLQWEN_LORA_TARGETS = (
    "(.*(model)(?!.*visual).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$|.*(custom_text_proj).*$)"
)

_COLQWEN_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 4096,
    "mrope_section": [4, 6, 6],
}

#: Architecture of each checkpoint. Head sizes are 32 where vLLM's CPU attention needs a supported size;
#: ``mrope_section`` sums to head_dim / 2 as Qwen2-VL's multimodal rotary embedding requires.
SPECS: dict[str, dict[str, Any]] = {
    TINY_RETRIEVER: {
        "kind": "colqwen2",
        "text": _COLQWEN_TEXT,
        "vision": {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2},
        "embedding_dim": 128,
    },
    TINY_GENERATOR: {
        "kind": "qwen2_vl",
        "text": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "mrope_section": [4, 6, 6],
        },
        "vision": {"depth": 2, "embed_dim": 64, "num_heads": 2, "mlp_ratio": 2},
    },
    # A BERT-architecture cross-encoder (one relevance logit per (query, passage) pair), the shape of
    # cross-encoder/ms-marco-MiniLM-L-6-v2, for the text reranker's offline path.
    TINY_CROSS_ENCODER: {
        "kind": "cross_encoder",
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 512,
        },
    },
    # vidore/colqwen2.5-base in miniature: a ColQwen2_5 (Qwen2.5-VL backbone + ColBERT head) saved with the
    # pre-transformers-5 weight names the published checkpoints carry (model.layers.*, not language_model.layers.*).
    # Vision layer 0 attends within windows, layer 1 over the whole image (fullatt_block_indexes), as Qwen2.5-VL's do.
    TINY_COLQWEN2_5_BASE: {
        "kind": "colqwen2_5_base",
        "text": {**_COLQWEN_TEXT, "max_position_embeddings": 32768},
        "vision": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        "embedding_dim": 128,
        "pixels": [QWEN_MIN_PIXELS, QWEN_MAX_PIXELS],
    },
    # vidore/colqwen2.5-v0.2 in miniature: only the LoRA adapter (adapter_config.json + adapter_model.safetensors,
    # pre-transformers-5 key names) and the processor; adapter_config.json names the base checkpoint, which
    # ColQwen2_5.from_pretrained(<this dir>) loads first. Seeded non-zero LoRA weights: the adapter changes outputs.
    TINY_COLQWEN2_5: {
        "kind": "colqwen2_5_adapter",
        "base": TINY_COLQWEN2_5_BASE,
        "lora": {
            "r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.1,
            "init_lora_weights": "gaussian",
            "bias": "none",
            "task_type": "FEATURE_EXTRACTION",
            "target_modules": COLQWEN_LORA_TARGETS,
        },
        "lora_std": 0.05,
        "pixels": [QWEN_MIN_PIXELS, QWEN_MAX_PIXELS],
    },
    # Qwen/Qwen2.5-VL-7B-Instruct in miniature, loadable by transformers and vLLM, weights under the published
    # checkpoint's names. Vision heads of 32, RMSNorm and SwiGLU, windowed + full attention like the real tower.
    TINY_QWEN2_5_VL: {
        "kind": "qwen2_5_vl",
        "text": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "mrope_section": [4, 6, 6],
        },
        "vision": {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        "pixels": [QWEN_MIN_PIXELS, QWEN_MAX_PIXELS],
    },
}


def weights_name(spec: dict[str, Any]) -> str:
    """The file holding a checkpoint's weights (an adapter's own weights for an adapter)."""
    return ADAPTER_WEIGHTS_NAME if spec.get("kind") == "colqwen2_5_adapter" else WEIGHTS_NAME


# ------------------------------------------------------------------------------------- transformers configs
def _token_ids(tokenizer: Any) -> dict[str, int]:
    return {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}


def _text_config(spec: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    t = spec["text"]
    ids = _token_ids(tokenizer)
    # Round the vocabulary up to a multiple of 64 (as real checkpoints do) so embedding rows cover every token.
    vocab_size = -(-len(tokenizer) // 64) * 64
    return {
        "vocab_size": vocab_size,
        "hidden_size": t["hidden_size"],
        "intermediate_size": t["intermediate_size"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_attention_heads": t["num_attention_heads"],
        "num_key_value_heads": t["num_key_value_heads"],
        "max_position_embeddings": t["max_position_embeddings"],
        "max_window_layers": t["num_hidden_layers"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": t["mrope_section"]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }


def _vision_tokens(tokenizer: Any) -> dict[str, int]:
    ids = _token_ids(tokenizer)
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def qwen2vl_config(spec: dict[str, Any], tokenizer: Any) -> Any:
    """A ``Qwen2VLConfig`` for a ``colqwen2`` or ``qwen2_vl`` spec."""
    from transformers import Qwen2VLConfig

    t, v = spec["text"], spec["vision"]
    ids = _token_ids(tokenizer)
    vision_config = {
        "depth": v["depth"],
        "embed_dim": v["embed_dim"],
        "num_heads": v["num_heads"],
        "mlp_ratio": v["mlp_ratio"],
        "hidden_size": t["hidden_size"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    return Qwen2VLConfig(
        text_config=_text_config(spec, tokenizer),
        vision_config=vision_config,
        **_vision_tokens(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )


def qwen2_5_vl_config(spec: dict[str, Any], tokenizer: Any) -> Any:
    """A ``Qwen2_5_VLConfig`` for a ``colqwen2_5_base`` or ``qwen2_5_vl`` spec."""
    from transformers import Qwen2_5_VLConfig

    t, v = spec["text"], spec["vision"]
    vision_config = {
        "depth": v["depth"],
        "hidden_size": v["hidden_size"],
        "intermediate_size": v["intermediate_size"],
        "num_heads": v["num_heads"],
        "out_hidden_size": t["hidden_size"],
        "window_size": v["window_size"],
        "fullatt_block_indexes": v["fullatt_block_indexes"],
        "hidden_act": "silu",
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "in_channels": 3,
    }
    return Qwen2_5_VLConfig(
        text_config=_text_config(spec, tokenizer),
        vision_config=vision_config,
        **_vision_tokens(tokenizer),
        tie_word_embeddings=False,
        dtype="float32",
    )


# ------------------------------------------------------------------------------------------------ processors
def _pixels(spec: dict[str, Any]) -> tuple[int, int]:
    lo, hi = spec.get("pixels", (MIN_PIXELS, MAX_PIXELS))
    return int(lo), int(hi)


def image_processor(spec: dict[str, Any]) -> Any:
    from transformers import Qwen2VLImageProcessor

    lo, hi = _pixels(spec)
    return Qwen2VLImageProcessor(min_pixels=lo, max_pixels=hi)


def video_processor(spec: dict[str, Any]) -> Any:
    from transformers import Qwen2VLVideoProcessor

    lo, hi = _pixels(spec)
    kwargs: dict[str, Any] = {"min_pixels": lo, "max_pixels": hi}
    # Bound a whole video's pixel cost the way qwen-vl-utils does (and silence transformers' warning about it);
    # the option exists in transformers 5.x until it becomes the default.
    if hasattr(Qwen2VLVideoProcessor, "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = True
    return Qwen2VLVideoProcessor(**kwargs)


__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "COLQWEN_LORA_TARGETS",
    "MANIFEST_NAME",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "QWEN_MAX_PIXELS",
    "QWEN_MIN_PIXELS",
    "SPECS",
    "WEIGHTS_NAME",
    "TinyModelError",
    "image_processor",
    "qwen2_5_vl_config",
    "qwen2vl_config",
    "video_processor",
    "weights_name",
]
