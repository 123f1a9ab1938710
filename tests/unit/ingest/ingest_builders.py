"""Builders for hostile and synthetic test files (PDF objects, PNG chunks), shared by the ingest tests."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

#: Pages in tests/data/coin.pdf.
COIN_PAGES = 11


# ------------------------------------------------------------------------------ PDF builders
def make_pdf(objects: list[bytes]) -> bytes:
    """A PDF from numbered object bodies (object 1 must be the catalog), with a correct xref."""
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def stream(data: bytes) -> bytes:
    return b"<</Length %d>>stream\n" % len(data) + data + b"\nendstream"


#: Page content: a filled blue square and the word "square" (Helvetica).
SQUARE = stream(b"0 0 1 rg 20 20 100 100 re f BT /F1 12 Tf 20 150 Td (square) Tj ET")
FONT = b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>"


def page_obj(contents: int = 4, font: int = 5) -> bytes:
    return b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]/Contents %d 0 R/Resources<</Font<</F1 %d 0 R>>>>>>" % (
        contents,
        font,
    )


def pdf_with_kids(kids: bytes, count: int, extra: list[bytes] | None = None) -> bytes:
    """Catalog, page tree (``/Kids`` and ``/Count`` as given), a square page (3), content (4), font (5)."""
    return make_pdf(
        [
            b"<</Type/Catalog/Pages 2 0 R>>",
            b"<</Type/Pages/Count %d/Kids[%s]>>" % (count, kids),
            page_obj(),
            SQUARE,
            FONT,
            *(extra or []),
        ]
    )


# ------------------------------------------------------------------------------ PNG builders
def png_chunk(kind: bytes, data: bytes, *, bad_crc: bool = False) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc ^ (0xFF if bad_crc else 0))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but whose data is one tiny row: a bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def encode(img: Any, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()
