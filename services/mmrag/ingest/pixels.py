"""Pixel hygiene shared by the readers: every image leaves as 8-bit RGB, bounded in size and shape."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

#: Widest aspect ratio an item may have. transformers' Qwen2-VL image processor raises for ratios
#: over 200 (an 8x4000 strip), so thinner images are padded with white to this ratio.
MAX_ASPECT = 100.0

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def fit_size(width: float, height: float, max_pixels: int) -> tuple[float, float]:
    """(width, height) shrunk uniformly so that width * height <= max_pixels (never enlarged)."""
    area = width * height
    if area <= max_pixels:
        return width, height
    s = math.sqrt(max_pixels / area)
    return width * s, height * s


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB with transparency composited on white.

    16-bit greyscale is scaled (x 255/65535), not clipped: a naive ``convert("L")`` clips a 16-bit
    PNG to almost all white. Float and 32-bit integer images are stretched over their own range.
    Black text on a transparent background stays black text on white (a plain ``convert("RGB")``
    drops the alpha channel and leaves black on black).
    """
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img), mode), "L")
    elif mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    if mode in _SIXTEEN_BIT:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if mode == "I" and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0 if hi > 255 else 255.0  # 16-bit (or 8-bit) samples held in int32
    span = hi - lo or 1.0
    out = np.where(finite, (a - lo) * (255.0 / span), 0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def bound(img: Image.Image, max_pixels: int, max_aspect: float = MAX_ASPECT) -> tuple[Image.Image, list[str]]:
    """Shrink to at most ``max_pixels`` and pad (white) to at most ``max_aspect``; note any padding.

    The padded canvas is sized before anything is allocated, so a 100x640000 strip never builds a
    gigapixel canvas on the way.
    """
    w, h = img.size
    pad = max(w, h) / min(w, h) > max_aspect

    def canvas(s: float) -> tuple[int, int]:
        cw, ch = max(1, math.floor(w * s)), max(1, math.floor(h * s))
        if pad:
            if cw >= ch:
                ch = max(ch, math.ceil(cw / max_aspect))
            else:
                cw = max(cw, math.ceil(ch / max_aspect))
        return cw, ch

    s = 1.0
    cw, ch = canvas(s)
    if cw * ch > max_pixels:
        s = math.sqrt(max_pixels / (cw * ch))
        while s > 1e-9 and math.prod(canvas(s)) > max_pixels:
            s *= 0.995
        cw, ch = canvas(s)
        img = img.resize(
            (max(1, math.floor(w * s)), max(1, math.floor(h * s))), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    notes: list[str] = []
    if pad:
        notes.append(f"aspect ratio {max(w, h) / min(w, h):.0f}:1 is over {max_aspect:.0f}:1; padded with white")
        out = Image.new("RGB", (cw, ch), (255, 255, 255))
        out.paste(img, ((cw - img.width) // 2, (ch - img.height) // 2))
        img = out
    return img, notes
