"""ocr_image: tesseract as a subprocess, optional, one core, and pages without a text layer."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from PIL import Image

from mmrag.config import IngestConfig
from mmrag.ingest import ocr
from mmrag.ingest.readers import DecodedItem, OcrError, ocr_available, ocr_image, read_pdf

pytestmark = pytest.mark.unit

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")


def text_image(text: str, size: int = 36) -> Image.Image:
    doc = pymupdf.open()
    page = doc.new_page(width=640, height=160)
    page.insert_text((30, 90), text, fontsize=size)
    pix = page.get_pixmap()
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


def scanned_pdf(text: str) -> bytes:
    """A one-page PDF whose page is only a picture of ``text``: no text layer, like a scan."""
    doc = pymupdf.open()
    page = doc.new_page(width=640, height=160)
    buf = io.BytesIO()
    text_image(text).save(buf, format="PNG")
    page.insert_image(page.rect, stream=buf.getvalue())
    return doc.tobytes()


@needs_tesseract
def test_recognises_rendered_text() -> None:
    assert ocr_available()
    out = ocr_image(text_image("Conditional inference 2026"), "eng")
    assert "Conditional" in out and "inference" in out and "2026" in out


@needs_tesseract
def test_scanned_page_has_no_text_layer_but_ocr_reads_it() -> None:
    (it,) = list(read_pdf(scanned_pdf("Permutation tests for everyone"), IngestConfig(dpi=144)))
    assert isinstance(it, DecodedItem)
    assert it.text == "" and it.text_source is None, "no text layer: this is what OCR is for"
    got = ocr_image(it.keyframe, "eng")
    assert "Permutation" in got and "everyone" in got


@needs_tesseract
def test_missing_language_data_is_a_config_error() -> None:
    with pytest.raises(OcrError, match="tesseract-ocr-qqq"):
        ocr_image(text_image("x"), "qqq")


def test_invalid_language_string_is_rejected() -> None:
    with pytest.raises(OcrError, match=r"ingest\.ocr_lang"):
        ocr_image(text_image("x"), "eng; rm -rf /")
    with pytest.raises(OcrError):
        ocr_image(text_image("x"), "--help")


def test_without_tesseract_ocr_is_empty(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ocr.shutil, "which", lambda name: None)
    monkeypatch.setattr(ocr, "_warned_missing", False)
    assert not ocr_available()
    assert ocr_image(text_image("hello")) == ""
    assert ocr_image(text_image("again")) == ""
    assert sum("tesseract is not installed" in r.message for r in caplog.records) == 1, "said once"


def test_subprocess_is_one_thread_with_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        seen.update(cmd=cmd, head=Path(cmd[1]).read_bytes()[:2], **kw)
        return subprocess.CompletedProcess(cmd, 0, stdout=b"  fake text\x0c\n", stderr=b"")

    monkeypatch.setattr(ocr.shutil, "which", lambda name: "/usr/bin/tesseract")
    monkeypatch.setattr(ocr.subprocess, "run", fake_run)
    assert ocr_image(text_image("x"), "eng+deu", timeout_s=7) == "fake text"
    exe, image, *rest = seen["cmd"]
    assert exe == "/usr/bin/tesseract" and rest == ["stdout", "-l", "eng+deu"]
    assert seen["head"] in (b"P5", b"P6"), "an uncompressed PNM file: encoding PNG cost more than the OCR"
    assert not Path(image).exists(), "the temporary image is removed"
    assert seen["env"]["OMP_THREAD_LIMIT"] == "1" and seen["timeout"] == 7


def test_a_hung_tesseract_costs_one_image(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(cmd: list[str], **kw: Any) -> None:
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(ocr.shutil, "which", lambda name: "/usr/bin/tesseract")
    monkeypatch.setattr(ocr.subprocess, "run", slow)
    assert ocr_image(text_image("x"), timeout_s=0.1) == ""
