"""Turning what the user typed (files, directories, globs, object-store URIs) into files to read.

Local paths are resolved to absolute paths (that is the ``source_uri`` stored with every row), while messages
name a file by the path the user gave (``SourceFile.shown``). A symlink whose real path leaves the roots given
(a directory or glob's base, a named file's directory) is refused unless ``follow_symlinks``: a folder handed to
mmrag cannot pull in ``~/.ssh`` through a link. URIs with a scheme (``s3://``, ``gs://``, ``abfs://``,
``file://``, ...) go through pyarrow's filesystems, the same layer Ray Data reads with.
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
    given: str = ""
    """The path as the user gave it (or as found under a directory they gave), for messages."""

    @property
    def shown(self) -> str:
        return self.given or self.uri


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


def expand(inputs: list[str], *, follow_symlinks: bool = False) -> tuple[list[SourceFile], list[SourceProblem]]:
    """Expand inputs into files (sorted, de-duplicated) and problems (inputs that match nothing, symlinks that
    lead out of the given roots)."""
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
            files = []
            refused = 0
            for f in _expand_local(raw, follow_symlinks):
                if isinstance(f, SourceProblem):
                    problems.append(f)
                    refused += 1
                else:
                    files.append(f)
            if refused and not files:
                continue
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


def _root(raw: str, pattern: str) -> Path:
    """The directory a local input may not leave through a symlink: the directory given, a glob's fixed base, or
    a named file's directory."""
    if any(ch in raw for ch in "*?["):
        parts = Path(pattern).parts
        fixed = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))
        base = Path(*parts[:fixed]) if fixed else Path(".")
    else:
        p = Path(pattern)
        base = p if p.is_dir() else p.parent
    return Path(os.path.realpath(base))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _local_file(p: Path, root: Path, follow: bool) -> SourceFile | SourceProblem:
    real = Path(os.path.realpath(p))
    if not follow and not _inside(real, root):
        return SourceProblem(
            str(p),
            f"{p} is a symlink to {real}, outside {root}; pass --follow-symlinks (ingest.follow_symlinks) to ingest it",
        )
    return SourceFile(str(real), p.stat().st_size, given=str(p))


def _expand_local(raw: str, follow: bool = False) -> Iterator[SourceFile | SourceProblem]:
    pattern = os.path.expanduser(raw)
    paths = glob.glob(pattern, recursive=True) if any(ch in raw for ch in "*?[") else [pattern]
    root = _root(raw, pattern)
    for p in map(Path, paths):
        if p.is_dir():
            if not follow and not _inside(Path(os.path.realpath(p)), root):
                yield SourceProblem(str(p), f"{p} is a symlink to a directory outside {root}; pass --follow-symlinks")
                continue
            for sub in sorted(p.rglob("*")):
                if sub.is_file() and not any(part.startswith(".") for part in sub.relative_to(p).parts):
                    yield _local_file(sub, root, follow)
        elif p.is_file():
            yield _local_file(p, root, follow)


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
