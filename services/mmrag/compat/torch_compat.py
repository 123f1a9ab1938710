"""Make PyPI's torchvision / torchaudio / torchcodec importable beside a CPU-only torch.

Why: the CPU profile uses torch 2.13.0+cpu, but PyPI only serves CUDA builds of torchvision,
torchaudio and torchcodec. Their native libraries then fail to load, and

* torchvision's ``_meta_registrations`` calls ``torch.library.register_fake("torchvision::nms")``
  for ops that were never defined, so ``import torchvision`` raises
  ``RuntimeError: operator torchvision::nms does not exist``. transformers' Qwen2-VL image
  processor imports ``torchvision.transforms.v2`` at module level, so both colpali-engine's
  ColQwen2 and vLLM's Qwen2-VL need torchvision to import. Only its pure-Python transforms are
  used; its C++ ops and ``torchvision.io`` stay unavailable.
* torchaudio / torchcodec raise ``OSError`` from transformers' audio utilities on import.

What: a tiny import hook (a ``sys.meta_path`` finder). It does nothing until one of those three
packages is first imported; then it tries to load the package's native library exactly as the
package would. If that works (a matching build, e.g. the GPU profile) nothing changes. If it
fails, for torchvision it defines the schemas of the ops that ``_meta_registrations`` fakes, and
for torchaudio / torchcodec it makes the import fail with a plain ``ImportError`` (which every
caller treats as "not installed") instead of ``OSError``.

Where it takes effect: ``mmrag_torch_compat.pth`` (installed into site-packages with the project,
see services/hatch_build.py) imports :mod:`mmrag.compat.activate` in every Python process of the
environment, which is the only place that reaches Ray workers *and* the processes vLLM spawns on
its own (engine core, model-registry subprocess). ``MMRAG_TORCH_COMPAT=0`` turns it off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path

_HANDLED = ("torchvision", "torchaudio", "torchcodec")

#: Ops that torchvision's _meta_registrations registers with ``register_fake`` (which needs the op
#: to exist). Schemas as torchvision's C++ library defines them.
TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

#: What the shim did in this process, by package: "native" (library loaded, nothing changed),
#: "shimmed" (fallback applied) or "absent". Tests and `mmrag version` read it.
STATUS: dict[str, str] = {}


def _package_dir(name: str) -> Path | None:
    spec = importlib.machinery.PathFinder.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _native_loads(lib: Path) -> bool:
    try:
        import torch  # the package being imported needs torch anyway
    except ImportError:
        return True  # no torch: nothing to reconcile, leave the package's own error alone

    try:
        torch.ops.load_library(str(lib))
    except (OSError, RuntimeError):
        return False
    return True


def _fix_torchvision() -> None:
    pkg = _package_dir("torchvision")
    if pkg is None:
        STATUS["torchvision"] = "absent"
        return
    libs = sorted(pkg.glob("_C*.so")) + sorted(pkg.glob("_C*.pyd"))
    if libs and _native_loads(libs[0]):
        STATUS["torchvision"] = "native"
        return
    import torch.library

    for name, schema in TORCHVISION_SCHEMAS.items():
        if not _op_exists(f"torchvision::{name}"):
            # Library objects must outlive this call or the definitions are dropped.
            lib = torch.library.Library("torchvision", "FRAGMENT")
            lib.define(schema)
            _KEEP.append(lib)
    STATUS["torchvision"] = "shimmed"


def _op_exists(qualname: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
    except RuntimeError:
        return False
    return True


_KEEP: list[object] = []


def _hide_if_broken(name: str) -> bool:
    """Hide ``name`` (``sys.modules[name] = None``) when none of its native libraries loads.

    With ``None`` in sys.modules, ``import name`` raises ModuleNotFoundError and
    ``importlib.util.find_spec(name)`` returns None, so callers see "not installed".
    """
    if name in STATUS:
        return STATUS[name] == "shimmed"
    pkg = _package_dir(name)
    if pkg is None:
        STATUS[name] = "absent"
        return False
    libs = sorted(pkg.rglob("lib*.so"))
    if not libs or any(_native_loads(lib) for lib in libs):
        STATUS[name] = "native"
        return False
    STATUS[name] = "shimmed"
    sys.modules[name] = None  # type: ignore[assignment]
    return True


#: Importing one of these triggers the torchaudio/torchcodec check up front, so that their own
#: ``find_spec`` probes (transformers' ``is_torchaudio_available``) already answer "absent".
_TRIGGERS = ("transformers", "vllm")


class _Finder(importlib.abc.MetaPathFinder):
    """Runs the fix for a handled package the first time it is imported, then steps aside."""

    def __init__(self) -> None:
        self._busy = False

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if self._busy or (fullname not in _HANDLED and fullname not in _TRIGGERS):
            return None
        self._busy = True
        try:
            if fullname == "torchvision":
                if "torchvision" not in STATUS:
                    _fix_torchvision()
            elif fullname in _TRIGGERS:
                for name in ("torchaudio", "torchcodec"):
                    _hide_if_broken(name)
            elif _hide_if_broken(fullname):
                raise ModuleNotFoundError(
                    f"{fullname} is installed but its native library does not load beside this torch "
                    f"(a CUDA build next to CPU torch); mmrag.compat hides it",
                    name=fullname,
                )
        finally:
            self._busy = False
        return None  # let the normal finders import the package


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent; no-op when MMRAG_TORCH_COMPAT=0)."""
    if os.environ.get("MMRAG_TORCH_COMPAT", "1") == "0":
        return
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
