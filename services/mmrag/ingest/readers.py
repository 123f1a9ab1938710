"""The decoding layer of ingestion: files in, pages / images / clips (or reasons they failed) out.

Every reader is a generator of :class:`DecodedItem` and :class:`DecodeError` records and never
raises for bad input; each takes an :class:`mmrag.config.IngestConfig` for its limits.

=================  ======================================================================
``read_any``       check size, detect the type by magic bytes, dispatch to one of:
``read_pdf``       one item per page (PyMuPDF), errors per page
``read_image``     one item (Pillow), the first frame of an animation
``read_video``     one item per clip of ``clip_seconds`` (decord)
``read_audio``     one ``audio`` item per window of ``clip_seconds`` (PyAV), for audio files and
                   video containers without a video stream
``detect_kind``    ``pdf`` / ``image`` / ``video`` / ``audio`` / None from a file's first bytes
``ocr_image``      tesseract on one image (``""`` where tesseract is not installed)
=================  ======================================================================
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mmrag.ingest.audio import read_audio, streams
from mmrag.ingest.common import default_cfg, human_bytes
from mmrag.ingest.detect import HEAD_BYTES, Kind, describe_unknown, detect_kind
from mmrag.ingest.image import DECODE_LIMIT_FACTOR, read_image
from mmrag.ingest.ocr import OcrError, ocr_available, ocr_image
from mmrag.ingest.pdf import read_pdf
from mmrag.ingest.pixels import MAX_ASPECT
from mmrag.ingest.records import DecodedItem, DecodeError, ErrorCode, Modality, TextSource
from mmrag.ingest.video import clip_windows, read_video

if TYPE_CHECKING:
    from mmrag.config import IngestConfig

__all__ = [
    "DECODE_LIMIT_FACTOR",
    "HEAD_BYTES",
    "MAX_ASPECT",
    "DecodeError",
    "DecodedItem",
    "ErrorCode",
    "Kind",
    "Modality",
    "OcrError",
    "TextSource",
    "clip_windows",
    "describe_unknown",
    "detect_kind",
    "ocr_available",
    "ocr_image",
    "read_any",
    "read_audio",
    "read_image",
    "read_pdf",
    "read_video",
]


def read_any(
    path: str | os.PathLike[str],
    cfg: IngestConfig | None = None,
    *,
    kind: Kind | None = None,
    source: str | None = None,
    render_pixels: int | None = None,
) -> Iterator[DecodedItem | DecodeError]:
    """Read a local file of any supported kind. ``kind`` skips detection when the caller already
    sniffed the file (the pipeline does, when it hashes it). ``render_pixels`` is passed to
    :func:`read_pdf` (render pages straight at the size the caller keeps)."""
    cfg = default_cfg(cfg)
    src = source or os.fspath(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            yield DecodeError(src, f"cannot read it: it is {what}", "unreadable")
            return
        if st.st_size == 0:
            yield DecodeError(src, "empty file (0 bytes)", "empty")
            return
        if st.st_size > cfg.max_file_bytes:
            yield DecodeError(
                src,
                f"file is {human_bytes(st.st_size)}, over ingest.max_file_bytes "
                f"({human_bytes(cfg.max_file_bytes)}): raise the limit or split the file",
                "too_large",
            )
            return
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        yield DecodeError(src, f"cannot read the file: {e.strerror or e}", "unreadable")
        return

    kind = kind or detect_kind(head)
    if kind == "pdf":
        yield from read_pdf(path, cfg, source=src, render_pixels=render_pixels)
    elif kind == "image":
        yield from read_image(path, cfg, source=src)
    elif kind == "video":
        n_video, n_audio = streams(path)
        if n_video == 0 and n_audio > 0:  # a video container holding only sound (an .mp4 of a podcast)
            yield from read_audio(path, cfg, source=src)
        else:
            yield from read_video(path, cfg, source=src)
    elif kind == "audio":
        yield from read_audio(path, cfg, source=src)
    else:
        yield DecodeError(src, describe_unknown(head), "unsupported")
