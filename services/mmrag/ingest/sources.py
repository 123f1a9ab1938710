"""Turning what the user typed (files, directories, globs, object-store URIs) into files to read.

Local paths are resolved to absolute paths (that is the ``source_uri`` stored with every row);
URIs with a scheme (``s3://``, ``gs://``, ``abfs://``, ``file://``, ...) go through pyarrow's
filesystems, the same layer Ray Data reads with.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One file to ingest."""

    uri: str
    size: int


@dataclass(frozen=True)
class SourceProblem:
    """An input that names nothing readable."""

    uri: str
    reason: str


def _is_uri(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


def _fs(uri: str):  # type: ignore[no-untyped-def]
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def expand(inputs: list[str]) -> tuple[list[SourceFile], list[SourceProblem]]:
    """Expand inputs into files (sorted, de-duplicated) and problems (inputs that match nothing)."""
    found: dict[str, SourceFile] = {}
    problems: list[SourceProblem] = []
    for raw in inputs:
        if raw.startswith("file://"):
            raw = raw[len("file://") :]
        if _is_uri(raw):
            try:
                files = list(_expand_remote(raw))
            except (OSError, ValueError) as e:
                problems.append(SourceProblem(raw, f"cannot list {raw}: {e}"))
                continue
        else:
            files = list(_expand_local(raw))
        if not files:
            problems.append(SourceProblem(raw, _why_nothing(raw)))
        for f in files:
            found.setdefault(f.uri, f)
    return sorted(found.values(), key=lambda f: f.uri), problems


def _why_nothing(raw: str) -> str:
    if _is_uri(raw):
        return f"{raw} matches no file"
    p = Path(raw).expanduser()
    if any(ch in raw for ch in "*?["):
        return f"the pattern {raw} matches no file"
    if not p.exists():
        return f"{raw}: no such file or directory"
    if p.is_dir():
        return f"{raw} is an empty directory"
    return f"{raw} is not a regular file"


def _expand_local(raw: str) -> Iterator[SourceFile]:
    pattern = os.path.expanduser(raw)
    paths = glob.glob(pattern, recursive=True) if any(ch in raw for ch in "*?[") else [pattern]
    for p in map(Path, paths):
        if p.is_dir():
            for sub in sorted(p.rglob("*")):
                if sub.is_file() and not any(part.startswith(".") for part in sub.relative_to(p).parts):
                    yield SourceFile(str(sub.resolve()), sub.stat().st_size)
        elif p.is_file():
            yield SourceFile(str(p.resolve()), p.stat().st_size)


def _expand_remote(uri: str) -> Iterator[SourceFile]:
    from pyarrow import fs

    filesystem, path = _fs(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File:
        yield SourceFile(uri, info.size)
    elif info.type == fs.FileType.Directory:
        for sub in filesystem.get_file_info(fs.FileSelector(path, recursive=True)):
            if sub.type == fs.FileType.File and not Path(sub.path).name.startswith("."):
                yield SourceFile(f"{scheme}://{sub.path}", sub.size)


@contextlib.contextmanager
def open_input(uri: str) -> Iterator:  # type: ignore[type-arg]
    """A binary stream over a local path or an object-store URI."""
    if _is_uri(uri):
        filesystem, path = _fs(uri)
        with filesystem.open_input_stream(path) as f:
            yield f
    else:
        with open(uri, "rb") as f:
            yield f


def sha256_and_head(uri: str, head_bytes: int = 4096) -> tuple[str, bytes]:
    """Content hash of a file and its first bytes (for type detection), in one pass."""
    h = hashlib.sha256()
    head = b""
    with open_input(uri) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            if len(head) < head_bytes:
                head += chunk[: head_bytes - len(head)]
            h.update(chunk)
    return h.hexdigest(), head


@contextlib.contextmanager
def local_path(uri: str) -> Iterator[str]:
    """A local file path for ``uri``: the path itself, or a temporary download of a remote object."""
    if not _is_uri(uri):
        yield uri
        return
    suffix = Path(uri).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="mmrag-") as tmp:
        with open_input(uri) as src:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                tmp.write(chunk)
        tmp.flush()
        yield tmp.name
