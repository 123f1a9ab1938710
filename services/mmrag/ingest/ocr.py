"""OCR with the tesseract command-line tool (Debian ``tesseract-ocr`` + ``tesseract-ocr-<lang>``).

A subprocess rather than a Python binding: nothing to build, the binary is optional, a hung or
crashed tesseract costs one call (killed at the timeout), and ``OMP_THREAD_LIMIT=1`` keeps one
call on one core (tesseract's OpenMP threads make it slower, not faster, on a busy machine).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile

from PIL import Image

log = logging.getLogger(__name__)

_LANG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z][A-Za-z0-9_]*)*$")
_warned_missing = False


class OcrError(ValueError):
    """OCR cannot work as configured (bad ``ingest.ocr_lang``, missing language data)."""


def ocr_available() -> bool:
    """Whether the ``tesseract`` binary is on PATH."""
    return shutil.which("tesseract") is not None


def ocr_image(img: Image.Image, lang: str = "eng", *, timeout_s: float = 120.0) -> str:
    """Text recognised in ``img`` by tesseract, or ``""``.

    Returns ``""`` when tesseract is not installed (logged once per process: check
    :func:`ocr_available` to record it), and when one call fails or times out (logged), so one bad
    page never stops a document. Raises :class:`OcrError` for configuration errors: an invalid
    ``lang`` or a language whose data is not installed.
    """
    global _warned_missing
    if not _LANG_RE.match(lang):
        raise OcrError(f"invalid ingest.ocr_lang {lang!r}: use tesseract language codes like 'eng' or 'eng+deu'")
    exe = shutil.which("tesseract")
    if exe is None:
        if not _warned_missing:
            log.warning("tesseract is not installed: OCR is skipped (apt-get install tesseract-ocr tesseract-ocr-eng)")
            _warned_missing = True
        return ""
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    # An uncompressed PNM in a temporary file: PNG-encoding a 640x480 video frame cost ~180 ms (2/3 of the
    # OCR itself), and pushing ~1 MB through tesseract's stdin in 4 KB pipe writes sometimes cost as much.
    with tempfile.NamedTemporaryFile(prefix="mmrag-ocr-", suffix=".pnm") as f:
        img.save(f, format="PPM")
        f.flush()
        try:
            proc = subprocess.run(
                [exe, f.name, "stdout", "-l", lang],
                capture_output=True,
                timeout=timeout_s,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("tesseract took over %.0f s on a %dx%d image; OCR skipped for it", timeout_s, *img.size)
            return ""
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        if "Failed loading language" in err or "Error opening data file" in err:
            missing = [x for x in lang.split("+") if f"'{x}'" in err] or lang.split("+")
            raise OcrError(
                f"tesseract has no language data for {'+'.join(missing)!r} (ingest.ocr_lang={lang!r}): "
                f"install it (Debian: apt-get install {' '.join('tesseract-ocr-' + m.lower() for m in missing)}) "
                "or change ingest.ocr_lang"
            )
        log.warning("tesseract failed (exit %d): %s; OCR skipped for this image", proc.returncode, err[-300:])
        return ""
    return proc.stdout.decode("utf-8", "replace").replace("\x0c", "").strip()
