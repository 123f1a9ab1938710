"""What a file is, by its first bytes (never by its name: an HTML error page saved as ``.pdf`` is HTML)."""

from __future__ import annotations

import struct
from typing import Literal

Kind = Literal["pdf", "image", "video", "audio"]

#: Bytes to read from the start of a file for :func:`detect_kind` (PDF allows junk before ``%PDF-``
#: in the first 1024 bytes; an MPEG-TS check needs three 188-byte packets).
HEAD_BYTES = 4096

# ISO-BMFF major brands that are still images or audio, not video.
_IMAGE_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
# Top-level QuickTime atoms that can open a .mov without an ftyp box.
_MOV_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def detect_kind(head: bytes) -> Kind | None:
    """``pdf``, ``image``, ``video`` or ``audio`` from a file's first bytes (:data:`HEAD_BYTES` is plenty).

    Images are the formats Pillow reads here (PNG, JPEG, GIF, WebP, TIFF, BMP, AVIF); videos are
    containers FFmpeg (decord) reads (MP4/MOV/3GP, AVI, Matroska/WebM, MPEG-TS/PS, FLV, ASF/WMV);
    audio is what FFmpeg decodes for the transcriber (WAV, MP3, FLAC, M4A/AAC, Ogg). A video container
    without a video stream is found out when it is opened (it is then read as audio). Anything else,
    including HEIC, is None.
    """
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if _is_image(head):
        return "image"
    if _is_video(head):
        return "video"
    if _is_audio(head):
        return "audio"
    return None


def _is_image(h: bytes) -> bool:
    if h.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return True
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return True
    if h.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # TIFF, BigTIFF
        return True
    if h[:2] == b"BM" and len(h) >= 18:
        # "BM" alone is too weak: also require a known DIB header size.
        return struct.unpack("<I", h[14:18])[0] in _BMP_DIB_SIZES
    return h[4:8] == b"ftyp" and h[8:12] in _IMAGE_BRANDS


def _is_video(h: bytes) -> bool:
    if h[4:8] == b"ftyp":
        brand = h[8:12]
        return brand not in _IMAGE_BRANDS | _HEIF_BRANDS | _AUDIO_BRANDS
    if len(h) >= 8 and h[4:8] in _MOV_ATOMS:
        size = struct.unpack(">I", h[:4])[0]  # 0: to end of file, 1: 64-bit size follows
        return size in (0, 1) or size >= 8
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return True
    if h.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, WebM
        return True
    if h.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):  # MPEG program stream / video ES
        return True
    if h.startswith(b"FLV\x01"):
        return True
    if h.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF (WMV)
        return True
    return _is_mpeg_ts(h, 188, 0) or _is_mpeg_ts(h, 192, 4)


def _is_audio(h: bytes) -> bool:
    if h[:4] == b"RIFF" and h[8:12] == b"WAVE":
        return True
    if h.startswith((b"ID3", b"fLaC", b"OggS")):
        return True
    if h[4:8] == b"ftyp" and h[8:12] in _AUDIO_BRANDS:
        return True
    # a bare MPEG audio frame (MP3 without ID3 tag) or ADTS AAC: 11-bit sync, a layer that is not "reserved"
    if len(h) < 2 or h[0] != 0xFF:
        return False
    return (h[1] & 0xF6) == 0xF0 or ((h[1] & 0xE0) == 0xE0 and (h[1] & 0x06) != 0)


def _is_mpeg_ts(h: bytes, packet: int, offset: int) -> bool:
    """MPEG-TS (188-byte packets) or M2TS (192 bytes, 4-byte timestamp first): 0x47 sync bytes."""
    positions = [offset + k * packet for k in range(3)]
    return len(h) > positions[-1] and all(h[p] == 0x47 for p in positions)


def describe_unknown(head: bytes) -> str:
    """A reason for a file :func:`detect_kind` rejects: what it looks like, and its first bytes."""
    h = head.lstrip()
    what = None
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        what = "a HEIF/HEIC image, which cannot be decoded here: convert it to JPEG or PNG"
    elif h[:5].lower() in (b"<!doc", b"<html") or h[:14].lower().startswith(b"<?xml"):
        what = "an HTML/XML document (often an error page saved under a download's name)"
    elif head.startswith(b"PK\x03\x04"):
        what = "a ZIP archive (also .docx/.pptx/.xlsx/.epub): export it to PDF first"
    prefix = f"it looks like {what}; " if what else ""
    return f"not a PDF, image or video, nor an audio file ({prefix}starts with {head[:16]!r})"
