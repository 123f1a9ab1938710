"""Media for the gateway's item routes: a clip's source video (when it can be served) and evidence drawn on images.

A clip's row keeps its sampled frames, not the video: the video can be played only from the file it was ingested
from. :func:`source_file` gives that file when it is a local path that still holds the same bytes (its sha256 is
the row's ``content_hash``; checked once per file size and modification time), so a file changed or replaced after
ingestion is never served as the cited one. Uploads (``upload:<name>``) and object-store sources are not served.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from pathlib import Path
from typing import Any

from fastapi.responses import Response

#: (path, size, mtime_ns) -> sha256 of files already checked.
_HASHES: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Most bytes one ranged response carries: a player asks again for the rest.
MAX_CHUNK = 4 << 20
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def source_file(row: dict[str, Any]) -> Path | None:
    """The local file an item was ingested from, if it is still there with the same content; else None."""
    uri = row.get("source_uri") or ""
    if not uri.startswith("/") or not row.get("content_hash"):
        return None
    path = Path(uri)
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _LOCK:
        known = _HASHES.get(key)
    if known is None:
        try:
            known = _sha256(path)
        except OSError:
            return None
        with _LOCK:
            _HASHES[key] = known
    return path if known == row["content_hash"] else None


def ranged_file(path: Path, range_header: str | None) -> Response:
    """The file, or the part a ``Range: bytes=a-b`` header asks for (206), as a browser's video player needs."""
    size = path.stat().st_size
    media_type = VIDEO_TYPES.get(path.suffix.lower(), "video/mp4")
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "max-age=3600"}
    m = _RANGE.match((range_header or "").strip())
    if m is None or (not m.group(1) and not m.group(2)):
        start, end, status = 0, min(size, MAX_CHUNK) - 1, 200 if size <= MAX_CHUNK else 206
    else:
        if m.group(1):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
        else:  # the last n bytes
            start, end = max(0, size - int(m.group(2))), size - 1
        end = min(end, size - 1, start + MAX_CHUNK - 1)
        if start >= size or end < start:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
    with path.open("rb") as f:
        f.seek(start)
        body = f.read(end - start + 1)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(content=body, status_code=status, media_type=media_type, headers=headers)


def draw_regions(jpeg: bytes, regions: list[dict[str, Any]]) -> bytes:
    """``jpeg`` with each region's box drawn and numbered (best first), as JPEG."""
    from PIL import Image, ImageDraw

    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = im.size
    overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    line = max(2, round(min(w, h) / 200))
    for i, r in enumerate(regions, start=1):
        box = (r["x0"] * w, r["y0"] * h, r["x1"] * w - 1, r["y1"] * h - 1)
        d.rectangle(box, fill=(255, 196, 0, 60), outline=(230, 81, 0, 255), width=line)
        d.text((box[0] + line + 2, box[1] + line + 1), f"{i} {r['score']:.0%}", fill=(120, 30, 0, 255))
    out = io.BytesIO()
    Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


__all__ = ["draw_regions", "ranged_file", "source_file"]
