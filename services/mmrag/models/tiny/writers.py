"""One writer per kind of tiny checkpoint: ``writer(tmp, spec, seed, tokenizer)`` fills the empty directory ``tmp``.

A writer may return extra manifest entries (the adapter records which base it was built against). Every writer
seeds torch before it creates weights, so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrag.models.tiny.specs import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    MANIFEST_NAME,
    SPECS,
    WEIGHTS_NAME,
    TinyModelError,
    image_processor,
    qwen2_5_vl_config,
    qwen2vl_config,
    video_processor,
)
from mmrag.models.tiny.tokenizer import CHAT_TEMPLATE

Writer = Callable[[Path, dict[str, Any], int, Any], "dict[str, Any] | None"]


# ----------------------------------------------------------------------------------- first generation (Qwen2)
def _write_retriever(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    config = qwen2vl_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = ColQwen2(config).eval()
    _check_dim(model, spec, "ColQwen2")
    model.save_pretrained(tmp)
    ColQwen2Processor(
        image_processor=image_processor(spec),
        tokenizer=tokenizer,
        video_processor=video_processor(spec),
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(tmp)


def _generation_config(tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    return GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=eos,
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )


def _write_generator(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    config = qwen2vl_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(tmp)
    Qwen2VLProcessor(
        image_processor=image_processor(spec),
        tokenizer=tokenizer,
        video_processor=video_processor(spec),
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(tmp)


def _write_cross_encoder(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer),
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=2,
        **spec["text"],
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


# ------------------------------------------------------------------------------- the gpu profile's (Qwen2.5)
def _check_dim(model: Any, spec: dict[str, Any], cls: str) -> None:
    if model.dim != spec["embedding_dim"]:
        raise TinyModelError(f"colpali-engine's {cls} projects to {model.dim} dims, spec says {spec['embedding_dim']}")


def legacy_key(key: str) -> str:
    """A transformers-5 weight name of a Qwen2(.5)-VL model as the published checkpoints (saved before transformers
    5 nested the backbone) spell it: ``language_model.layers.0...`` -> ``model.layers.0...``,
    ``model.visual...`` -> ``visual...``. Names already in that form come back unchanged."""
    for new, old in (
        ("model.language_model.", "model."),  # ...ForConditionalGeneration
        ("language_model.", "model."),  # the backbone itself (ColQwen2_5 is a Qwen2_5_VLModel)
        ("model.visual.", "visual."),
        ("base_model.model.language_model.", "base_model.model.model."),  # PEFT adapter keys
    ):
        if key.startswith(new):
            return old + key[len(new) :]
    return key


def _rewrite_legacy(path: Path) -> None:
    """Rename the tensors of one safetensors file to their published (pre-transformers-5) names."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    renamed = {legacy_key(k): v for k, v in tensors.items()}
    if len(renamed) != len(tensors):
        raise TinyModelError(f"renaming the weights of {path} to their published names made two of them collide")
    save_file(renamed, path, metadata={"format": "pt"})


def _processor_2_5(spec: dict[str, Any], tokenizer: Any, cls: Any) -> Any:
    return cls(
        image_processor=image_processor(spec),
        tokenizer=tokenizer,
        video_processor=video_processor(spec),
        chat_template=CHAT_TEMPLATE,
    )


def _write_colqwen2_5_base(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from colpali_engine.models import ColQwen2_5, ColQwen2_5_Processor

    config = qwen2_5_vl_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = ColQwen2_5(config).eval()
    _check_dim(model, spec, "ColQwen2_5")
    model.save_pretrained(tmp)
    _rewrite_legacy(tmp / WEIGHTS_NAME)
    _processor_2_5(spec, tokenizer, ColQwen2_5_Processor).save_pretrained(tmp)


def _base_record(base_dir: Path) -> dict[str, str]:
    """Which base an adapter is built against: its absolute path and its weights' sha256 (from its manifest)."""
    try:
        manifest = json.loads((base_dir / MANIFEST_NAME).read_text())
        sha = manifest["files"][WEIGHTS_NAME]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TinyModelError(f"the adapter's base checkpoint {base_dir} is not built (no readable manifest)") from e
    return {"path": str(base_dir), "sha256": sha}


def _write_colqwen2_5_adapter(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> dict[str, Any]:
    """A PEFT LoRA adapter directory in vidore/colqwen2.5-v0.2's layout over the tiny base built beside it.

    ``base_model_name_or_path`` is the base's absolute path: transformers hands it to ``from_pretrained`` as it is,
    so a relative path would resolve against the process's working directory (the real adapter names a hub id).
    The build records that path in the manifest; a moved or copied tiny directory is re-linked by the next
    ``build_tiny`` (and :func:`~mmrag.models.tiny.verify_tiny` refuses it until then).
    """
    import torch
    from colpali_engine.models import ColQwen2_5, ColQwen2_5_Processor
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    base_dir = tmp.parent / spec["base"]
    record = _base_record(base_dir)
    base_spec = SPECS[spec["base"]]
    # The LoRA targets are found by module name, so the adapter is made on the base's architecture; the base's
    # weights themselves do not matter here (only the adapter's are saved).
    torch.manual_seed(seed)
    model = ColQwen2_5(qwen2_5_vl_config(base_spec, tokenizer)).eval()
    lora = LoraConfig(**spec["lora"], inference_mode=True)
    peft_model = get_peft_model(model, lora)
    # PEFT initialises lora_B to zero (an adapter that changes nothing): draw every LoRA matrix from the seed.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * spec["lora_std"])
    state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    if not state or not any("custom_text_proj" in k for k in state) or any("visual" in k for k in state):
        raise TinyModelError(f"the LoRA targets matched an unexpected set of modules: {sorted(state)[:6]}...")
    tensors = {legacy_key(k): v.detach().contiguous() for k, v in state.items()}
    save_file(tensors, tmp / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
    config = lora.to_dict()
    config["target_modules"] = spec["lora"]["target_modules"]  # a regex: stays a string, not a set
    config["base_model_name_or_path"] = record["path"]
    (tmp / ADAPTER_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True, default=sorted) + "\n")
    _processor_2_5(spec, tokenizer, ColQwen2_5_Processor).save_pretrained(tmp)
    return {"base": {"name": spec["base"], **record}}


def _write_qwen2_5_vl(tmp: Path, spec: dict[str, Any], seed: int, tokenizer: Any) -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    config = qwen2_5_vl_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(tmp)
    _rewrite_legacy(tmp / WEIGHTS_NAME)
    _processor_2_5(spec, tokenizer, Qwen2_5_VLProcessor).save_pretrained(tmp)


#: Writer of each spec ``kind``.
WRITERS: dict[str, Writer] = {
    "colqwen2": _write_retriever,
    "qwen2_vl": _write_generator,
    "cross_encoder": _write_cross_encoder,
    "colqwen2_5_base": _write_colqwen2_5_base,
    "colqwen2_5_adapter": _write_colqwen2_5_adapter,
    "qwen2_5_vl": _write_qwen2_5_vl,
}

__all__ = ["WRITERS", "Writer", "legacy_key"]
