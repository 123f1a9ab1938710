"""read_any: one entry point that checks the file, sniffs its type and never raises."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ingest_builders import COIN_PAGES, encode
from PIL import Image

from mmrag.config import IngestConfig
from mmrag.ingest.readers import DecodedItem, DecodeError, read_any

pytestmark = pytest.mark.unit


def test_dispatch_by_content_not_name(tmp_path: Path, coin_pdf: Path, cup_mp4: Path) -> None:
    cfg = IngestConfig(dpi=36, clip_seconds=5.0, frames_per_clip=2)
    # every file is given a misleading name
    pdf = tmp_path / "holiday.jpg"
    pdf.write_bytes(coin_pdf.read_bytes())
    video = tmp_path / "notes.pdf"
    video.write_bytes(cup_mp4.read_bytes())
    image = tmp_path / "clip.mp4"
    image.write_bytes(encode(Image.new("RGB", (64, 48), (1, 2, 3)), "WEBP", lossless=True))

    pages = list(read_any(pdf, cfg))
    assert [r.modality for r in pages] == ["page"] * COIN_PAGES  # type: ignore[union-attr]
    assert {r.source for r in pages} == {os.fspath(pdf)}
    clips = list(read_any(video, cfg, source="s3://bucket/cup.mp4"))
    assert [(r.modality, r.start_s) for r in clips] == [("clip", 0.0), ("clip", 5.0)]  # type: ignore[union-attr]
    assert {r.source for r in clips} == {"s3://bucket/cup.mp4"}
    (img,) = list(read_any(image, cfg))
    assert isinstance(img, DecodedItem) and img.modality == "image" and (img.width, img.height) == (64, 48)


def test_kind_from_the_caller_skips_sniffing(coin_pdf: Path) -> None:
    (err,) = list(read_any(coin_pdf, IngestConfig(), kind="image"))
    assert isinstance(err, DecodeError) and err.code == "unsupported"


def test_file_level_problems(tmp_path: Path, coin_pdf: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.touch()
    (err,) = list(read_any(empty))
    assert (err.code, err.reason) == ("empty", "empty file (0 bytes)")

    (err,) = list(read_any(coin_pdf, IngestConfig(max_file_bytes=50_000)))
    assert err.code == "too_large" and "103.7 KB" in err.reason and "ingest.max_file_bytes (48.8 KB)" in err.reason

    (err,) = list(read_any(tmp_path))
    assert err.code == "unreadable" and "directory" in err.reason

    (err,) = list(read_any(tmp_path / "nope.pdf"))
    assert err.code == "unreadable" and "No such file" in err.reason

    html = tmp_path / "paper.pdf"
    html.write_bytes(b"<!DOCTYPE html>\n<html><body>Rate limit exceeded</body></html>")
    (err,) = list(read_any(html))
    assert err.code == "unsupported" and "not a PDF, image or video" in err.reason and "HTML" in err.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_permission_denied(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    p = tmp_path / "locked.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n")
    p.chmod(0)
    (err,) = list(read_any(p))
    assert err.code == "unreadable" and "Permission denied" in err.reason


PREFIXES = [
    b"%PDF-1.4\n",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBP",
    b"II*\x00",
    b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
    b"\x00\x00\x00\x18ftypisom",
    b"RIFF\x00\x10\x00\x00AVI ",
    b"\x1a\x45\xdf\xa3",
    b"\x00\x00\x01\xba",
]


@pytest.mark.parametrize("prefix", PREFIXES, ids=lambda p: repr(p[:6]))
def test_right_magic_then_garbage_gives_an_error_not_an_exception(tmp_path: Path, prefix: bytes) -> None:
    rng = np.random.default_rng(len(prefix))
    for n in (10, 1000, 30_000):
        p = tmp_path / f"x{n}"
        p.write_bytes(prefix + rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        out = list(read_any(p, IngestConfig(max_pixels=100_000)))
        assert out and all(isinstance(r, DecodeError) for r in out), out
        assert all(r.reason and r.source == os.fspath(p) for r in out)  # type: ignore[union-attr]
