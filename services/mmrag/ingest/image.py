"""Still images: decoded with Pillow, checked, oriented, converted to 8-bit RGB and bounded.

Pillow's own decompression-bomb guard is a process-wide global (``Image.MAX_IMAGE_PIXELS``) that
this module never changes. Instead the size in the header is checked against a decode limit taken
from the config after ``Image.open`` (which reads only the header) and before ``load()``.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from mmrag.ingest.common import (
    BytesOrPath,
    default_cfg,
    err_msg,
    megapixels,
    read_head,
    source_name,
    thumbnail_png,
)
from mmrag.ingest.pixels import bound, fit_size, to_rgb
from mmrag.ingest.records import DecodedItem, DecodeError

if TYPE_CHECKING:
    from mmrag.config import IngestConfig

#: Images are decoded at full size before being scaled to ``ingest.max_pixels``, so the largest one
#: accepted is this many times ``max_pixels`` (64 MP, ~200 MB of RGB, at the default 4 MP).
#: JPEGs are decoded at a reduced scale (1/2, 1/4, 1/8) first, so the check applies after that.
DECODE_LIMIT_FACTOR = 16


def read_image(
    data_or_path: BytesOrPath,
    cfg: IngestConfig | None = None,
    *,
    source: str | None = None,
    max_decode_pixels: int | None = None,
) -> Iterator[DecodedItem | DecodeError]:
    """Yield one :class:`DecodedItem` for the image (the first frame if animated), or one error.

    ``max_decode_pixels`` defaults to ``DECODE_LIMIT_FACTOR * cfg.max_pixels``; larger images are
    rejected before any pixel is decoded. The result is EXIF-oriented 8-bit RGB (16-bit scaled,
    transparency composited on white), at most ``cfg.max_pixels``, padded to a sane aspect ratio.
    """
    cfg = default_cfg(cfg)
    src = source_name(data_or_path, source)
    limit = max_decode_pixels or DECODE_LIMIT_FACTOR * cfg.max_pixels
    head, problem = read_head(data_or_path, src, cfg, 16)
    if problem is not None:
        yield problem
        return

    def open_image() -> Image.Image:
        # Pillow reads lazily: a path is never read whole just to learn that it is too big.
        if isinstance(data_or_path, bytes):
            return Image.open(io.BytesIO(data_or_path))
        return Image.open(data_or_path)

    with warnings.catch_warnings(record=True) as caught:
        # Pillow warns above Image.MAX_IMAGE_PIXELS (the size is checked against our own limit
        # instead) and about damaged metadata (kept as notes on the item).
        warnings.simplefilter("always")
        rec = _decode(open_image, head, src, cfg, limit)
    if isinstance(rec, DecodedItem):
        seen = dict.fromkeys(
            f"Pillow: {w.message}" for w in caught if not issubclass(w.category, Image.DecompressionBombWarning)
        )
        rec.warnings.extend(seen)
    yield rec


def _decode(
    open_image: Callable[[], Image.Image], head: bytes, src: str, cfg: IngestConfig, limit: int
) -> DecodedItem | DecodeError:
    # Pass 1: header and checksums. verify() leaves the image unusable, hence the second open.
    try:
        with open_image() as probe:
            fmt, (w, h) = probe.format, probe.size
            if w * h > limit and fmt != "JPEG":
                return _too_big(src, w, h, limit)
            probe.verify()
    except Image.DecompressionBombError as e:
        # Pillow's own global guard fired first (above 2 x Image.MAX_IMAGE_PIXELS).
        m = re.search(r"\((\d+) pixels\)", str(e))
        n = f"{megapixels(int(m.group(1)))} " if m else ""
        return DecodeError(
            src,
            f"image is {n}(Pillow refuses it as a possible decompression bomb), over the decode limit of "
            f"{megapixels(limit)} ({DECODE_LIMIT_FACTOR} x ingest.max_pixels): downscale it before ingesting",
            "too_large",
        )
    except UnidentifiedImageError:
        return DecodeError(
            src, f"corrupt or unsupported image: Pillow cannot identify it (starts with {head!r})", "unsupported"
        )
    except Exception as e:  # verify() raises SyntaxError for a bad PNG CRC, OSError when truncated
        return DecodeError(src, f"corrupt image: {_describe(e)}; get an intact copy", "corrupt")

    # Pass 2: decode the first frame.
    notes: list[str] = []
    try:
        with open_image() as img:
            frames = img.n_frames if getattr(img, "is_animated", False) else 1
            if frames > 1:
                notes.append(f"{frames} frames ({img.format}); only the first frame is used")
            if fmt == "JPEG":
                tw, th = fit_size(w, h, cfg.max_pixels)
                img.draft("RGB", (math.ceil(tw), math.ceil(th)))  # DCT scaling: decode at 1/2, 1/4, 1/8
                if img.width * img.height > limit:
                    return _too_big(src, w, h, limit)
            img.load()
            try:
                oriented = ImageOps.exif_transpose(img) or img
            except Exception as e:  # a malformed EXIF block must not cost the image
                notes.append(f"EXIF orientation ignored ({err_msg(e)})")
                oriented = img
            try:
                rgb = to_rgb(oriented)
                if rgb is img:  # leaving the with-block closes img and frees its pixels
                    rgb = img.copy()
            except Exception as e:  # e.g. LAB or an exotic mode Pillow cannot convert
                return DecodeError(src, f"unsupported image mode {img.mode!r}: {err_msg(e)}", "unsupported")
    except Image.DecompressionBombError as e:
        return DecodeError(src, f"image rejected as a decompression bomb: {e}", "too_large")
    except Exception as e:
        return DecodeError(src, f"corrupt image: {_describe(e)}; get an intact copy", "corrupt")

    rgb, padded = bound(rgb, cfg.max_pixels)
    return DecodedItem(
        modality="image",
        source=src,
        index=0,
        images=[rgb],
        thumbnail_png=thumbnail_png(rgb, cfg.thumbnail_px),
        width=rgb.width,
        height=rgb.height,
        warnings=notes + padded,
    )


def _too_big(src: str, w: int, h: int, limit: int) -> DecodeError:
    return DecodeError(
        src,
        f"image is {w}x{h} = {megapixels(w * h)}, over the decode limit of {megapixels(limit)} "
        f"({DECODE_LIMIT_FACTOR} x ingest.max_pixels): downscale it before ingesting or raise ingest.max_pixels",
        "too_large",
    )


def _describe(e: BaseException) -> str:
    text = str(e)
    if "checksum" in text or "crc" in text.lower():
        return f"bad checksum ({text})"
    if "truncated" in text.lower():
        return f"truncated file ({text})"
    return err_msg(e)
