"""detect_kind: the type of a file from its first bytes, checked on what real encoders write."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from ingest_builders import encode
from PIL import Image, features

from mmrag.ingest.readers import HEAD_BYTES, describe_unknown, detect_kind

pytestmark = pytest.mark.unit


def head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEAD_BYTES)


def test_real_files(coin_pdf: Path, cup_mp4: Path) -> None:
    assert detect_kind(head(coin_pdf)) == "pdf"
    assert detect_kind(head(cup_mp4)) == "video"


IMAGE_FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"] + (["AVIF"] if features.check("avif") else [])


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_images_written_by_pillow(fmt: str) -> None:
    img = Image.new("RGB", (16, 8), (10, 200, 30))
    assert detect_kind(encode(img, fmt)[:HEAD_BYTES]) == "image"


def _box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("pdf after junk", b"\x00" * 600 + b"%PDF-1.7\n", "pdf"),
        ("pdf too late", b"\x00" * 1100 + b"%PDF-1.7\n", None),
        ("mp4", _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41"), "video"),
        ("mov ftyp", _box(b"ftyp", b"qt  \x00\x00\x02\x00qt  "), "video"),
        ("mov without ftyp", _box(b"wide") + _box(b"mdat", b"\x00" * 8), "video"),
        ("3gp", _box(b"ftyp", b"3gp4\x00\x00\x00\x00"), "video"),
        ("avi", b"RIFF\x10\x00\x00\x00AVI LIST", "video"),
        ("mkv/webm", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "video"),
        ("mpeg-ts", b"".join(b"\x47" + bytes(187) for _ in range(3)), "video"),
        ("m2ts", b"".join(b"\x00\x00\x00\x00\x47" + bytes(187) for _ in range(3)), "video"),
        ("mpeg-ps", b"\x00\x00\x01\xba\x44\x00", "video"),
        ("flv", b"FLV\x01\x05\x00\x00\x00\x09", "video"),
        ("asf", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9", "video"),
        ("heic is not readable here", _box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic"), None),
        ("m4a", _box(b"ftyp", b"M4A \x00\x00\x00\x00M4A mp42"), "audio"),
        ("html", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", None),
        ("BM text is not a bitmap", b"BMW 320i, 1998, 180000 km, good condition", None),
        ("wav", b"RIFF\x10\x00\x00\x00WAVEfmt ", "audio"),
        ("mp3 with ID3", b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio"),
        ("bare mp3 frame", b"\xff\xfb\x90\x64\x00", "audio"),
        ("adts aac", b"\xff\xf1\x50\x80", "audio"),
        ("flac", b"fLaC\x00\x00\x00\x22", "audio"),
        ("ogg", b"OggS\x00\x02", "audio"),
        ("0xff then a reserved layer is not audio", b"\xff\xe0\x00\x00", None),
        ("zip", b"PK\x03\x04\x14\x00\x06\x00", None),
        ("empty", b"", None),
        ("one sync byte is not TS", b"\x47" + bytes(400), None),
    ],
)
def test_magic(name: str, data: bytes, expected: str | None) -> None:
    assert detect_kind(data) == expected, name


def test_random_bytes_are_nothing() -> None:
    rng = random.Random(7)
    hits = [detect_kind(bytes(rng.randrange(256) for _ in range(HEAD_BYTES))) for _ in range(200)]
    assert hits.count(None) >= 199  # a random 4 KB head matches a 4-byte magic with p ~ 1e-7


def test_extension_is_ignored(tmp_path: Path, coin_pdf: Path) -> None:
    fake = tmp_path / "report.pdf"
    fake.write_bytes(b"<html><head><title>Error</title></head><body>Access denied</body></html>")
    assert detect_kind(head(fake)) is None
    renamed = tmp_path / "movie.mp4"
    renamed.write_bytes(coin_pdf.read_bytes())
    assert detect_kind(head(renamed)) == "pdf"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"<!DOCTYPE html><html>", "HTML"),
        (b"PK\x03\x04\x14\x00", "ZIP"),
        (_box(b"ftyp", b"heic\x00\x00\x00\x00"), "HEIC"),
        (bytes(range(200, 232)), "starts with b"),
    ],
)
def test_describe_unknown(data: bytes, words: str) -> None:
    reason = describe_unknown(data)
    assert reason.startswith("not a PDF, image or video")
    assert words in reason
    assert repr(data[:16]) in reason
