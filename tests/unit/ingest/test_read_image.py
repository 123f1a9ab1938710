"""read_image: every image leaves as bounded 8-bit RGB, and hostile ones leave as clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ingest_builders import encode, png_chunk, png_header_only
from PIL import Image, ImageDraw

from mmrag.config import IngestConfig
from mmrag.ingest.pixels import bound
from mmrag.ingest.readers import MAX_ASPECT, DecodedItem, DecodeError, read_image

pytestmark = pytest.mark.unit


def one(data: bytes, cfg: IngestConfig | None = None, **kw) -> DecodedItem | DecodeError:  # type: ignore[no-untyped-def]
    (rec,) = list(read_image(data, cfg or IngestConfig(max_pixels=1_000_000, thumbnail_px=64), **kw))
    return rec


def item(data: bytes, cfg: IngestConfig | None = None) -> DecodedItem:
    rec = one(data, cfg)
    assert isinstance(rec, DecodedItem), rec
    (img,) = rec.images
    assert img.mode == "RGB" and img.size == (rec.width, rec.height)
    assert rec.modality == "image" and rec.index == 0 and rec.page is None
    return rec


def arr(rec: DecodedItem) -> np.ndarray:
    return np.asarray(rec.images[0]).astype(int)


def test_plain_png_round_trips() -> None:
    src = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rec = item(encode(Image.fromarray(src), "PNG"))
    assert (rec.width, rec.height) == (40, 30) and rec.warnings == []
    assert np.array_equal(arr(rec), src)
    thumb = Image.open(io.BytesIO(rec.thumbnail_png))
    assert thumb.format == "PNG" and thumb.size == (40, 30)  # never upscaled


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(fmt: str) -> None:
    ramp = np.linspace(0, 65535, 256, dtype=np.float64)[None, :].repeat(8, 0).astype(np.uint16)
    src = Image.fromarray(ramp)
    assert src.mode == "I;16"
    naive = np.asarray(Image.open(io.BytesIO(encode(src, fmt))).convert("L"))
    assert naive.mean() > 250, "Pillow's own conversion clips to white (the trap this guards against)"
    got = arr(item(encode(src, fmt)))[0, :, 0]
    assert np.abs(got - np.linspace(0, 255, 256)).max() <= 1


def test_float_image_is_stretched() -> None:
    f = Image.fromarray(np.linspace(-1.0, 1.0, 64, dtype=np.float32)[None, :].repeat(4, 0), "F")
    got = arr(item(encode(f, "TIFF")))[0, :, 0]
    assert got[0] == 0 and got[-1] == 255 and np.all(np.diff(got) >= 0)


def test_black_text_on_transparency_becomes_black_on_white() -> None:
    img = Image.new("RGBA", (120, 40), (0, 0, 0, 0))  # transparent *black*
    ImageDraw.Draw(img).rectangle((10, 10, 60, 30), fill=(0, 0, 0, 255))
    data = encode(img, "PNG")
    assert np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).max() == 0, "naive convert is all black"
    a = arr(item(data))
    assert (a[0, 0] == 255).all() and (a[20, 30] == 0).all()
    assert 0.15 < (a[..., 0] < 128).mean() < 0.3


@pytest.mark.parametrize(
    ("mode", "kw"),
    [("P", {"transparency": 0}), ("LA", {}), ("L", {"transparency": 0}), ("RGBA", {})],
)
def test_other_transparency_modes(mode: str, kw: dict) -> None:  # type: ignore[type-arg]
    base = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    ImageDraw.Draw(base).rectangle((0, 0, 9, 9), fill=(0, 0, 0, 255))
    img = base.convert(mode) if mode != "P" else base.convert("RGB").quantize(2)
    if mode == "L":
        img = Image.new("L", (20, 10), 0)
        ImageDraw.Draw(img).rectangle((0, 0, 9, 9), fill=1)
    elif mode == "P":
        img = Image.new("P", (20, 10), 0)
        img.putpalette([0, 0, 0, 0, 0, 0])
        ImageDraw.Draw(img).rectangle((0, 0, 9, 9), fill=1)
    a = arr(item(encode(img, "PNG", **kw)))
    assert (a[5, 15] == 255).all(), f"{mode}: the transparent half must be white"
    assert a[5, 5].max() <= 1, f"{mode}: the opaque half stays black"


def test_cmyk_jpeg_and_palette_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    r, g, b = arr(item(encode(cmyk, "JPEG", quality=95)))[8, 8]
    assert r > 200 and g < 60 and b < 60
    pal = Image.new("RGB", (16, 16), (0, 0, 255)).quantize(4)
    assert tuple(arr(item(encode(pal, "GIF")))[8, 8]) == (0, 0, 255)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    ImageDraw.Draw(img).rectangle((0, 0, 9, 19), fill=(0, 0, 255))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display rotated 90 degrees clockwise
    rec = item(encode(img, "JPEG", exif=exif, quality=95))
    assert (rec.width, rec.height) == (20, 40)
    top = arr(rec)[2, 10]
    assert top[2] > 200 and top[0] < 60, "the left edge is at the top after rotating clockwise"


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    rec = item(buf.getvalue())
    assert tuple(arr(rec)[5, 5]) == (255, 0, 0)
    assert any("3 frames" in w and "first frame" in w for w in rec.warnings)


def test_large_image_is_downscaled_keeping_its_shape() -> None:
    img = Image.new("RGB", (3000, 1500), (10, 120, 200))
    rec = item(encode(img, "PNG"), IngestConfig(max_pixels=400_000, thumbnail_px=64))
    assert 390_000 < rec.width * rec.height <= 400_000
    assert abs(rec.width / rec.height - 2.0) < 0.02
    assert max(Image.open(io.BytesIO(rec.thumbnail_png)).size) == 64


def test_big_jpeg_is_decoded_at_reduced_scale() -> None:
    # 4000x3000 = 12 MP, over the decode limit of 16 x 50k = 0.8 MP, but JPEG's DCT scaling
    # decodes it at 1/8 (500x375) without ever holding the full image
    jpeg = encode(Image.new("RGB", (4000, 3000), (200, 30, 30)), "JPEG", quality=80)
    rec = item(jpeg, IngestConfig(max_pixels=50_000))
    assert rec.width * rec.height <= 50_000 and abs(rec.width / rec.height - 4 / 3) < 0.02
    # the same pixels as PNG cannot be decoded small: refused before decoding
    png = png_header_only(4000, 3000)
    err = one(png, IngestConfig(max_pixels=50_000))
    assert isinstance(err, DecodeError) and err.code == "too_large" and "4000x3000" in err.reason


def test_thin_strip_is_padded_to_a_sane_aspect_ratio() -> None:
    strip = Image.new("RGB", (8, 4000), (0, 0, 0))
    rec = item(encode(strip, "PNG"))
    assert max(rec.width, rec.height) / min(rec.width, rec.height) <= MAX_ASPECT
    assert rec.height == 4000 and rec.width == 40
    a = arr(rec)
    assert (a[:, 16:24] == 0).all() and (a[:, :10] == 255).all(), "the strip stays centred on white"
    assert any("padded with white" in w for w in rec.warnings)


def test_extreme_strip_is_padded_within_the_pixel_budget() -> None:
    rec = item(encode(Image.new("L", (1, 60000), 0), "PNG"), IngestConfig(max_pixels=100_000))
    assert rec.width * rec.height <= 100_000
    assert max(rec.width, rec.height) / min(rec.width, rec.height) <= MAX_ASPECT


# ----------------------------------------------------------------------------------- hostile
@pytest.mark.parametrize(("w", "h"), [(30000, 30000), (10000, 10000), (200_000, 100)])
def test_decompression_bomb_is_refused_before_decoding(w: int, h: int) -> None:
    before = Image.MAX_IMAGE_PIXELS
    err = one(png_header_only(w, h))
    assert isinstance(err, DecodeError) and err.code == "too_large"
    assert "MP" in err.reason and "decode limit of 16 MP" in err.reason and "ingest.max_pixels" in err.reason
    assert before == Image.MAX_IMAGE_PIXELS, "the process-wide Pillow limit is left alone"


def test_bad_png_checksum_is_caught() -> None:
    good = encode(Image.new("RGB", (50, 50), (200, 10, 10)), "PNG")
    i = good.index(b"IDAT")
    n = int.from_bytes(good[i - 4 : i], "big")
    bad = good[: i - 4] + png_chunk(b"IDAT", good[i + 4 : i + 4 + n], bad_crc=True) + good[i + 8 + n :]
    assert Image.open(io.BytesIO(bad)).convert("RGB").size == (50, 50), "Pillow alone loads it"
    err = one(bad, source="scan.png")
    assert isinstance(err, DecodeError) and err.code == "corrupt" and err.source == "scan.png"
    assert "checksum" in err.reason


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    err = one(data[: len(data) // 2])
    assert isinstance(err, DecodeError) and err.code == "corrupt" and "truncated" in err.reason


def test_not_an_image_and_empty(write) -> None:  # type: ignore[no-untyped-def]
    err = one(b"garbage" * 10)
    assert isinstance(err, DecodeError) and err.code == "unsupported" and "cannot identify" in err.reason
    err = one(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # a PNG signature, then nonsense
    assert isinstance(err, DecodeError) and err.code == "corrupt"
    (err,) = list(read_image(write("empty.png", b"")))
    assert err.code == "empty"
    (err,) = list(read_image(write("dir", b"x").parent / "missing.png"))
    assert err.code == "unreadable" and "No such file" in err.reason


def test_animated_webp_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in ((0, 0, 255), (255, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    rec = item(buf.getvalue())
    assert tuple(arr(rec)[6, 6]) == (0, 0, 255)
    assert any("2 frames" in w for w in rec.warnings)


@pytest.mark.parametrize(
    ("w", "h", "budget"),
    [(8, 4000, 1_000_000), (4000, 8, 10_000), (1, 10**6, 50_000), (3000, 2000, 10_000), (100, 100, 10_000)],
)
def test_bound_keeps_pixels_and_shape_in_limits(w: int, h: int, budget: int) -> None:
    out, _ = bound(Image.new("RGB", (w, h), (0, 0, 0)), budget)
    assert out.width * out.height <= budget
    assert max(out.size) / min(out.size) <= MAX_ASPECT
    if w * h <= budget and max(w, h) / min(w, h) <= MAX_ASPECT:
        assert out.size == (w, h), "images within limits are left alone"
