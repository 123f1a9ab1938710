"""Image resizing shared by ingestion, the prompt and the benchmarks.

* :func:`fit_pixels`: an RGB image scaled down (never up) to a pixel budget, as ingestion stores and encodes pages,
  images and frames (``ingest.ReadStage``; ``benchmarks/ingest.py`` measures the same).
* :func:`fit_image_size` and :func:`prepare_image`: a stored image resized for the generator's prompt, to the
  Qwen2-VL grid (sides multiples of 28 pixels), as a JPEG data URL with its count of visual tokens.

Three resizes elsewhere differ and stay where they are: the readers' :func:`mmrag.ingest.pixels.bound` pads
extreme aspect ratios as it shrinks, :func:`mmrag.ingest.common.thumbnail_png` bounds the longest side rather than
the area, and ``mmrag.ingest.video`` shrinks frames bilinearly at every ratio (:func:`fit_pixels` switches to
bicubic below half size): folding it in would change the stored frames.

Pillow is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

#: Qwen2-VL / Qwen2.5-VL: 14-pixel patches merged 2x2, so one visual token per 28x28 pixels.
IMAGE_UNIT = 28
#: Qwen2-VL's processor never shrinks an image below 4 visual tokens (56x56 pixels).
MIN_IMAGE_PIXELS = 4 * IMAGE_UNIT * IMAGE_UNIT
#: Qwen2-VL's processor rejects aspect ratios above 200; stay well below and squash the rest.
MAX_ASPECT_RATIO = 100
#: Images larger than this many pixels are not decoded at all (the store keeps ~1 MP JPEGs).
MAX_DECODE_PIXELS = 64_000_000
JPEG_QUALITY = 85


def fit_pixels(img: Any, max_pixels: int) -> Any:
    """``img`` as RGB, scaled down (never up) to at most ``max_pixels``.

    Large reductions (a 1 MP page to the encoder's 50 kP) use ``reducing_gap=1``: an area-averaging reduce by
    the whole factor first (what OpenCV's INTER_AREA does), then bicubic over the rest; a quarter of the time
    of a bicubic resize over the whole image. Mild ones (under 2x, e.g. a 640x480 frame to the 250 kP stored
    frames) are bilinear: no aliasing to fight at that ratio, and 40% cheaper than bicubic.
    """
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if w * h <= max_pixels:
        return img
    scale = (max_pixels / (w * h)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    if scale > 0.5:
        return img.resize(size, Image.Resampling.BILINEAR)
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)


def fit_image_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Target size for an image: sides multiples of 28, area within ``[MIN_IMAGE_PIXELS, max_pixels]``, aspect
    ratio at most :data:`MAX_ASPECT_RATIO` (more extreme images are squashed).

    The Qwen2-VL processor keeps such a size as it is, so the image costs exactly ``(w / 28) * (h / 28)``
    visual tokens."""
    u = IMAGE_UNIT
    max_pixels = max(max_pixels, MIN_IMAGE_PIXELS)
    w, h = float(max(width, 1)), float(max(height, 1))
    if w / h > MAX_ASPECT_RATIO:
        w = h * MAX_ASPECT_RATIO
    elif h / w > MAX_ASPECT_RATIO:
        h = w * MAX_ASPECT_RATIO
    area = w * h
    if area > max_pixels:
        s = math.sqrt(max_pixels / area)
        tw, th = int(w * s) // u * u, int(h * s) // u * u
    elif area < MIN_IMAGE_PIXELS:
        s = math.sqrt(MIN_IMAGE_PIXELS / area)
        tw, th = math.ceil(w * s / u) * u, math.ceil(h * s / u) * u
    else:
        tw, th = round(w / u) * u, round(h / u) * u
    tw, th = max(u, tw), max(u, th)
    # Rounding, or a side raised to one unit, can push the area over the cap: recompute the longer side.
    if tw * th > max_pixels:
        if tw <= th:
            th = max(u, max_pixels // tw // u * u)
        else:
            tw = max(u, max_pixels // th // u * u)
    # Below the processor's minimum it would upscale (more tokens than counted): grow the shorter side.
    while tw * th < MIN_IMAGE_PIXELS:
        if tw <= th:
            tw += u
        else:
            th += u
    return tw, th


def prepare_image(data: bytes | None, max_pixels: int) -> tuple[str, int] | None:
    """``(data URL of a JPEG resized by fit_image_size, its visual tokens)``, or None if ``data`` is no image."""
    if not data:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_DECODE_PIXELS:
                return None
            tw, th = fit_image_size(img.width, img.height, max_pixels)
            if img.format == "JPEG":
                img.draft("RGB", (tw, th))  # decode at a reduced scale: much faster for big pages
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, "white")
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = img.convert("RGB")
            rgb = rgb.resize((tw, th), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return url, (tw // IMAGE_UNIT) * (th // IMAGE_UNIT)


__all__ = [
    "IMAGE_UNIT",
    "JPEG_QUALITY",
    "MAX_ASPECT_RATIO",
    "MAX_DECODE_PIXELS",
    "MIN_IMAGE_PIXELS",
    "fit_image_size",
    "fit_pixels",
    "prepare_image",
]
