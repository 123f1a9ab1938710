"""Tiny random-weight checkpoints that stand in for the real models, built offline and deterministically.

``build_tiny(out_dir)`` writes checkpoints that load exactly like the production ones:

* ``<out>/colqwen2``: a ColQwen2 (colpali-engine) retriever with its ``ColQwen2Processor``;
* ``<out>/qwen2-vl``: a ``Qwen2VLForConditionalGeneration`` generator with processor and chat template,
  loadable by transformers and by vLLM;
* ``<out>/cross-encoder``: a BERT sequence-classification cross-encoder for the text reranker;
* the gpu profile's architectures, for the ``gpu-tiny`` profile: ``<out>/colqwen2.5`` is a PEFT LoRA adapter in
  vidore/colqwen2.5-v0.2's layout (``adapter_config.json`` + ``adapter_model.safetensors`` + processor) over
  ``<out>/colqwen2.5-base`` (a ColQwen2_5, as vidore/colqwen2.5-base), so ``ColQwen2_5.from_pretrained(<adapter>)``
  takes the real adapter-loading path; ``<out>/qwen2.5-vl`` is a ``Qwen2_5_VLForConditionalGeneration`` for vLLM.
  Their weights carry the names the published checkpoints use (saved before transformers 5 renamed them).

All share a byte-level BPE tokenizer trained here with ``tokenizers`` on a small built-in corpus and carrying
Qwen2-VL's special tokens, so no hub access is ever needed. The weights are random: answers are gibberish and
retrieval scores are meaningless, but every code path (preprocessing, forward passes, vLLM serving) runs for real.

Each checkpoint holds a manifest (``mmrag-tiny.json``: builder format, seed, spec, sha256 of every file).
A later call finds a matching manifest and only verifies the hashes; ``force=True`` rebuilds. A build happens in a
temporary directory beside the target and is renamed into place when complete, so an interrupted build never
leaves a checkpoint that looks finished.

Modules: :mod:`~mmrag.models.tiny.tokenizer` (the shared tokenizer), :mod:`~mmrag.models.tiny.specs` (what each
checkpoint is), :mod:`~mmrag.models.tiny.writers` (one writer per kind), :mod:`~mmrag.models.tiny.build`
(manifests, verification, atomic builds). Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from mmrag.models.tiny.build import (
    BUILD_FORMAT,
    Status,
    build_tiny,
    is_built,
    tiny_path,
    verify_tiny,
)
from mmrag.models.tiny.build import _lock as _lock  # used by mmrag.models.smollm2
from mmrag.models.tiny.build import _quiet_progress as _quiet_progress
from mmrag.models.tiny.specs import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    MANIFEST_NAME,
    MAX_PIXELS,
    MIN_PIXELS,
    SPECS,
    WEIGHTS_NAME,
    TinyModelError,
    weights_name,
)
from mmrag.models.tiny.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS
from mmrag.models.tiny.writers import WRITERS as _WRITERS  # noqa: F401  (tests swap a writer in it)

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "BUILD_FORMAT",
    "CHAT_TEMPLATE",
    "MANIFEST_NAME",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "SPECIAL_TOKENS",
    "SPECS",
    "WEIGHTS_NAME",
    "Status",
    "TinyModelError",
    "build_tiny",
    "is_built",
    "tiny_path",
    "verify_tiny",
    "weights_name",
]
