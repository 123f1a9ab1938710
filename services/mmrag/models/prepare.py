"""Every offline model a config needs, prepared in one call: ``prepare_models(cfg)``.

Callers that load models (``build_app``, the demo, ``mmrag models build``) call this before anything loads a
``tiny:`` or ``real:`` reference; each preparer is a no-op when its verified checkpoints are already there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.config import REAL_GENERATOR, REAL_PREFIX

if TYPE_CHECKING:
    from mmrag.config import MmragConfig

#: One preparer: ``(cfg, force) -> [{"model", "path", "kind"}]`` for what it made ready (nothing when the config
#: needs none of its models).
ModelPreparer = Callable[["MmragConfig", bool], list[dict[str, Any]]]


def _smollm2(out: Path, force: bool) -> Path:
    from mmrag.models.smollm2 import build_smollm2

    return build_smollm2(out, force=force)


#: ``real:<name>`` -> builder ``(out_dir, force) -> out_dir``.
REAL_BUILDERS: dict[str, Callable[[Path, bool], Path]] = {REAL_GENERATOR: _smollm2}


def build_real(cfg: MmragConfig, ref: str, *, force: bool = False) -> Path:
    """Build the real checkpoint ``ref`` (``real:<name>``) into ``models.real_dir``; its path."""
    name = ref[len(REAL_PREFIX) :] if ref.startswith(REAL_PREFIX) else ref
    builder = REAL_BUILDERS.get(name)
    if builder is None:
        known = ", ".join(f"{REAL_PREFIX}{n}" for n in sorted(REAL_BUILDERS))
        raise ValueError(f"unknown model reference {ref!r}: the real models mmrag prepares offline are {known}")
    return builder(Path(cfg.models.resolve(f"{REAL_PREFIX}{name}")), force)


def prepare_tiny(cfg: MmragConfig, force: bool = False) -> list[dict[str, Any]]:
    """The tiny random-weight checkpoints, when the config names one."""
    if not cfg.models.uses_tiny():
        return []
    from mmrag.models.tiny import build_tiny

    report = build_tiny(cfg.models.tiny_dir, force=force)
    return [{"model": f"tiny:{n}", "path": str(r["path"]), "kind": "tiny (random weights)"} for n, r in report.items()]


def prepare_real(cfg: MmragConfig, force: bool = False) -> list[dict[str, Any]]:
    """The real checkpoints converted from packages (``real:<name>``) that the config names; the generator's only
    when vLLM serves it (``generator.engine: vllm``): the echo engine and ``none`` never load it."""
    refs = cfg.models.real_refs()
    if cfg.generator.engine != "vllm":
        refs = [r for r in refs if r != cfg.models.generator.model or r == cfg.models.retriever.model]
    return [{"model": ref, "path": str(build_real(cfg, ref, force=force)), "kind": "real weights"} for ref in refs]


def prepare_text(cfg: MmragConfig, force: bool = False) -> list[dict[str, Any]]:
    """The dense text channel's model: weights shipped inside a package (``pkg:``) are used in place, so this only
    checks they are there and load (config, tokenizer), with an error naming the install command if not."""
    t = cfg.models.text
    if t is None:
        return []
    from mmrag.models.text_encoder import resolve_text_model

    path = resolve_text_model(t.model)
    if Path(path).is_dir():
        from transformers import AutoConfig, AutoTokenizer

        conf = AutoConfig.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
        if int(getattr(conf, "hidden_size", t.dim)) != t.dim:
            raise ValueError(f"{t.model} makes {conf.hidden_size}-dimensional vectors; set models.text.dim to that")
    return [{"model": t.model, "path": path, "kind": "real weights (text embeddings)"}]


#: Run in order by :func:`prepare_models`.
MODEL_PREPARERS: list[ModelPreparer] = [prepare_tiny, prepare_real, prepare_text]


def prepare_models(cfg: MmragConfig, *, force: bool = False) -> list[dict[str, Any]]:
    """Prepare every offline model ``cfg`` needs; what each preparer reported, in order."""
    out: list[dict[str, Any]] = []
    for preparer in MODEL_PREPARERS:
        out.extend(preparer(cfg, force))
    return out


__all__ = [
    "MODEL_PREPARERS",
    "REAL_BUILDERS",
    "build_real",
    "prepare_models",
    "prepare_real",
    "prepare_text",
    "prepare_tiny",
]
