"""Building and verifying the tiny checkpoints: manifests with hashes, atomic swaps, one builder at a time."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mmrag.models.tiny.specs import (
    ADAPTER_CONFIG_NAME,
    MANIFEST_NAME,
    SPECS,
    WEIGHTS_NAME,
    TinyModelError,
    weights_name,
)
from mmrag.models.tiny.tokenizer import train_tokenizer
from mmrag.models.tiny.writers import WRITERS

#: Bump when the build recipe changes in a way that changes the files: older checkpoints are then rebuilt.
BUILD_FORMAT = 1

Status = Literal["built", "present"]

_REBUILD = "rebuild it with `mmrag models build-tiny --force`"


# ------------------------------------------------------------------------------------------------ hashing
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path (sorted)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return {p.relative_to(root).as_posix(): _sha256(p) for p in files}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _link_problem(path: Path, manifest: dict[str, Any]) -> str | None:
    """For an adapter: why it no longer points at the base beside it (moved or copied, base rebuilt), else None."""
    spec = manifest.get("spec")
    if not isinstance(spec, dict) or "base" not in spec:
        return None
    expected = path.resolve().parent / spec["base"]
    try:
        linked = json.loads((path / ADAPTER_CONFIG_NAME).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return f"its {ADAPTER_CONFIG_NAME} is missing or unreadable"
    if linked != str(expected):
        return f"its {ADAPTER_CONFIG_NAME} names the base {linked}, not {expected} beside it (moved or copied?)"
    base = _read_manifest(expected)
    built_against = (manifest.get("base") or {}).get("sha256")
    if base is None or (base.get("files") or {}).get(WEIGHTS_NAME) != built_against:
        return f"its base {expected} is missing or is not the build the adapter was made for"
    return None


def verify_tiny(path: str | Path) -> str:
    """Check a tiny checkpoint's files against its manifest; return the weights' sha256.

    Raises :class:`TinyModelError` naming each missing or changed file, and for an adapter whose recorded base is
    not the one beside it (a moved or copied directory: ``build_tiny`` re-links it).
    """
    path = Path(path)
    manifest = _read_manifest(path)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        raise TinyModelError(f"{path} has no readable {MANIFEST_NAME}; {_REBUILD}")
    problems = []
    for rel, expected in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif _sha256(f) != expected:
            problems.append(f"{rel}: sha256 differs from the manifest")
    if problems:
        raise TinyModelError(f"tiny checkpoint {path} is corrupted ({'; '.join(problems)}); {_REBUILD}")
    if (problem := _link_problem(path, manifest)) is not None:
        raise TinyModelError(
            f"tiny adapter {path} is stale: {problem}; run `mmrag models build-tiny` to re-link it to its base"
        )
    return str(manifest["files"][weights_name(manifest.get("spec") or {})])


# ---------------------------------------------------------------------------------------------- building
@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    """Serialise builders of one ``out_dir`` across processes (Ray workers may start one each)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the atomic rename still protects readers
        yield
        return
    with (out_dir / ".build.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bar during a build, restoring the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "tokenizers", "colpali-engine", "peft"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


def _build_one(target: Path, name: str, spec: dict[str, Any], seed: int, tokenizer: Any) -> str:
    """Build ``name`` into a temp dir beside ``target`` and swap it in; return the weights' sha256."""
    # A plain mkdir (not mkdtemp's 0700) so the checkpoint gets the caller's umask, like any other directory.
    tmp = target.parent / f".{name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with _quiet_progress():
            extra = WRITERS[spec["kind"]](tmp, spec, seed, tokenizer) or {}
        file_mode = tmp.stat().st_mode & 0o666
        for f in tmp.rglob("*"):
            if f.is_file():
                f.chmod(file_mode)  # safetensors writes 0600 via a temp file
        files = _hash_tree(tmp)
        weights = weights_name(spec)
        if weights not in files:
            raise TinyModelError(f"building {name} wrote no {weights} (files: {sorted(files)})")
        manifest = {
            "format": BUILD_FORMAT,
            "name": name,
            "seed": seed,
            "spec": spec,
            "versions": _versions(),
            "files": files,
            **extra,
        }
        # The manifest goes in last: a directory without one is never taken for a finished checkpoint.
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=target.parent))
            target.rename(old / name)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files[weights]


def _matches(manifest: dict[str, Any] | None, spec: dict[str, Any], seed: int) -> bool:
    return (
        manifest is not None
        and manifest.get("format") == BUILD_FORMAT
        and manifest.get("seed") == seed
        and manifest.get("spec") == json.loads(json.dumps(spec))
    )


def build_tiny(out_dir: str | Path, *, force: bool = False, seed: int = 0) -> dict[str, dict[str, str]]:
    """Build (or verify) every tiny checkpoint of :data:`SPECS` under ``out_dir``; no network is used.

    Returns ``{name: {"path", "status": "built" | "present", "sha256"}}`` where ``sha256`` is the weights
    file's hash. A checkpoint whose manifest matches (same format, seed and spec) is verified, not rebuilt;
    if its files changed since it was built, :class:`TinyModelError` is raised (rebuild with ``force=True``).
    An adapter is rebuilt when its base is no longer the one it was made for (rebuilt, or the directory moved).
    The same seed gives byte-identical files on every run with the same library versions and the same
    ``out_dir`` (an adapter's config holds its base's absolute path).
    """
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, str]] = {}
    with _lock(out):
        # Holding the lock, no other builder is running: temp dirs left here were killed mid-build (kill -9).
        for stale in [*out.glob(".*.building-*"), *out.glob(".*.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        tokenizer = None
        for name, spec in SPECS.items():  # a base comes before its adapter
            target = out / name
            manifest = _read_manifest(target)
            if not force and _matches(manifest, spec, seed) and _link_problem(target, manifest or {}) is None:
                summary[name] = {"path": str(target), "status": "present", "sha256": verify_tiny(target)}
                continue
            if tokenizer is None:
                tokenizer = train_tokenizer()
            sha = _build_one(target, name, spec, seed, tokenizer)
            summary[name] = {"path": str(target), "status": "built", "sha256": sha}
    return summary


def tiny_path(out_dir: str | Path, name: str) -> Path:
    """Directory of tiny checkpoint ``name`` under ``out_dir`` (it may not exist yet)."""
    if name not in SPECS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(SPECS)}")
    return Path(out_dir).expanduser() / name


def is_built(path: str | Path) -> bool:
    """True when ``path`` holds a finished tiny checkpoint (its manifest is present); hashes are not checked."""
    return _read_manifest(Path(path)) is not None


__all__ = ["BUILD_FORMAT", "build_tiny", "is_built", "tiny_path", "verify_tiny"]
