"""read_video on a real 8.1 s clip, on broken copies of it, and with a fake reader for the rare paths."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.config import IngestConfig, ShotsConfig
from mmrag.ingest.readers import DecodedItem, DecodeError, clip_windows, read_any, read_video
from mmrag.ingest.video import MIN_TAIL_FRACTION, sample_indices

pytestmark = pytest.mark.unit

CUP_SECONDS = 8.10397  # end of the last frame (217 frames at 26.78 fps)
FRAME = 1 / 26.777


def clips(path: Path | str, cfg: IngestConfig, **kw) -> tuple[list[DecodedItem], list[DecodeError]]:  # type: ignore[no-untyped-def]
    out = list(read_video(path, cfg, **kw))
    items = [r for r in out if isinstance(r, DecodedItem)]
    return items, [r for r in out if isinstance(r, DecodeError)]


def check_clip(it: DecodedItem, cfg: IngestConfig) -> None:
    assert it.modality == "clip" and it.page is None
    assert it.start_s is not None and it.end_s is not None and it.frame_ts is not None
    assert len(it.images) == len(it.frame_ts) >= 1
    assert all(b > a for a, b in itertools.pairwise(it.frame_ts)), "timestamps increase"
    assert all(it.start_s - FRAME - 1e-6 <= t <= it.end_s for t in it.frame_ts), "frames lie inside their clip"
    for img in it.images:
        assert img.mode == "RGB" and img.size == (it.width, it.height)
        assert img.width * img.height <= cfg.max_pixels
    thumb = Image.open(io.BytesIO(it.thumbnail_png))
    assert thumb.format == "PNG" and max(thumb.size) <= cfg.thumbnail_px


@pytest.fixture(scope="module")
def cup_clips(cup_mp4: Path) -> tuple[IngestConfig, list[DecodedItem]]:
    cfg = IngestConfig(clip_seconds=3.0, clip_overlap_seconds=0.5, frames_per_clip=4, thumbnail_px=96)
    items, errors = clips(cup_mp4, cfg)
    assert errors == []
    return cfg, items


def test_clips_cover_the_video_with_overlap(cup_clips: tuple[IngestConfig, list[DecodedItem]]) -> None:
    cfg, items = cup_clips
    assert [(it.index, it.start_s, it.end_s) for it in items] == [
        (0, 0.0, 3.0),
        (1, 2.5, 5.5),
        (2, 5.0, pytest.approx(CUP_SECONDS, abs=1e-4)),
    ]
    for it in items:
        check_clip(it, cfg)
        assert len(it.images) == 4 and (it.width, it.height) == (640, 480)


def test_frames_are_real_and_different(cup_clips: tuple[IngestConfig, list[DecodedItem]]) -> None:
    _, items = cup_clips
    frames = [np.asarray(img).astype(int) for it in items for img in it.images]
    assert all(f.std() > 10 for f in frames), "decoded frames are not flat"
    diffs = [np.abs(a - b).mean() for a, b in itertools.pairwise(frames)]
    assert min(diffs) > 0.5, "consecutive samples are different moments"
    ts = [t for it in items for t in it.frame_ts or []]
    spacing = np.diff(items[0].frame_ts or [])
    assert np.allclose(spacing, 0.75, atol=FRAME + 1e-6), "uniform inside the clip (3 s / 4 frames)"
    assert min(ts) < 0.5 and max(ts) > 7.5


def test_keyframe_is_the_middle_frame(cup_clips: tuple[IngestConfig, list[DecodedItem]]) -> None:
    _, items = cup_clips
    it = items[0]
    assert it.keyframe is it.images[2]
    thumb = np.asarray(Image.open(io.BytesIO(it.thumbnail_png)).convert("RGB")).astype(int)
    small = np.asarray(it.keyframe.resize((thumb.shape[1], thumb.shape[0]))).astype(int)
    assert np.abs(thumb - small).mean() < 8


def test_pixel_budget_downscales_while_decoding(cup_mp4: Path) -> None:
    cfg = IngestConfig(max_pixels=20_000, clip_seconds=10.0, frames_per_clip=3)
    items, errors = clips(cup_mp4, cfg)
    assert errors == [] and len(items) == 1
    (it,) = items
    check_clip(it, cfg)
    assert it.width * it.height <= 20_000 and abs(it.width / it.height - 4 / 3) < 0.05


def test_short_video_is_one_clip(cup_mp4: Path) -> None:
    items, _ = clips(cup_mp4, IngestConfig(clip_seconds=60.0, frames_per_clip=8))
    (it,) = items
    assert it.start_s == 0.0 and it.end_s == pytest.approx(CUP_SECONDS, abs=1e-4) and len(it.images) == 8


def test_back_to_back_clips_and_a_folded_tail(cup_mp4: Path) -> None:
    items, _ = clips(cup_mp4, IngestConfig(clip_seconds=2.0, frames_per_clip=2))
    bounds = [(it.start_s, it.end_s) for it in items]
    assert bounds[:3] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    # 8.10 s: the 0.10 s remainder is folded into the last clip instead of a sliver clip
    assert bounds[3] == (6.0, pytest.approx(CUP_SECONDS, abs=1e-4)) and len(bounds) == 4


def test_more_frames_asked_than_the_clip_has(cup_mp4: Path) -> None:
    cfg = IngestConfig(clip_seconds=2.0, frames_per_clip=64, max_pixels=20_000, shots=ShotsConfig(enabled=False))
    items, _ = clips(cup_mp4, cfg)
    # a 2 s clip holds ~54 frames: each is taken once, none twice (shots off: near-identical neighbours are kept)
    assert all(53 <= len(it.images) <= 55 for it in items[:3])
    assert all(len(set(it.frame_ts or [])) == len(it.images) for it in items)
    assert items[-1].end_s == pytest.approx(CUP_SECONDS, abs=1e-4)


@pytest.mark.parametrize(
    ("duration", "clip", "overlap"),
    [(8.1, 3, 0.5), (8.1, 2, 0), (0.04, 10, 0), (100, 7, 6.5), (10, 10, 0), (10.0, 3, 1)],
)
def test_clip_windows_cover_everything(duration: float, clip: float, overlap: float) -> None:
    w = clip_windows(duration, clip, overlap, t0=1.0)
    assert w[0][0] == 1.0 and w[-1][1] == pytest.approx(1.0 + duration)
    for (s0, e0), (s1, _) in itertools.pairwise(w):
        assert s1 == pytest.approx(s0 + clip - overlap) and s1 <= e0 + 1e-9, "no gaps"
    assert all(e - s <= clip * (1 + MIN_TAIL_FRACTION) + 1e-9 for s, e in w)


def test_sample_indices_are_uniform() -> None:
    starts = np.arange(100) / 10.0  # 10 fps, 10 s
    assert sample_indices(starts, (0.0, 10.0), 4) == [12, 37, 62, 87]
    assert sample_indices(starts, (2.0, 2.25), 8) == [20, 21, 22]


# ----------------------------------------------------------------------------------- hostile
def test_truncated_inside_the_header(write, cup_mp4: Path) -> None:  # type: ignore[no-untyped-def]
    path = write("cut.mp4", cup_mp4.read_bytes()[:10_000])
    items, errors = clips(path, IngestConfig())
    assert items == []
    (err,) = errors
    assert err.code == "corrupt" and "cannot open the video" in err.reason and "truncated" in err.reason


def test_truncated_in_the_middle_is_silently_shorter(write, cup_mp4: Path) -> None:  # type: ignore[no-untyped-def]
    # The index (moov) is at the front, so FFmpeg drops the samples past the cut without an error:
    # the video just looks 3.5 s long. Recorded here so a change in that behaviour is noticed.
    data = cup_mp4.read_bytes()
    items, errors = clips(write("half.mp4", data[: len(data) // 2]), IngestConfig(clip_seconds=3.0))
    assert errors == [] and 3.0 < (items[-1].end_s or 0) < 4.0


def test_undecodable_frames_are_skipped_not_fatal(write, cup_mp4: Path) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(cup_mp4.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 200_000] = bytes(200_000)  # 0.2 MB of zeros inside the H.264 data
    cfg = IngestConfig(clip_seconds=3.0, clip_overlap_seconds=0.5, frames_per_clip=4)
    items, errors = clips(write("zeroed.mp4", bytes(data)), cfg)
    # decord is not deterministic about how much of a damaged clip it recovers: sometimes a few frames,
    # sometimes none. Either way the video is not lost: the other clips load, and a clip with no
    # decodable frame is reported (never raised).
    assert len(items) + len(errors) == 3 and len(items) >= 2
    for e in errors:
        assert e.code == "corrupt" and "corrupt" in e.reason and e.start_s is not None
    short = [it for it in items if len(it.images) < 4]
    assert short or errors, "decord's get_batch failed for some clip; the frame-by-frame retry kept the rest"
    for it in items:
        check_clip(it, cfg)
    for it in short:
        assert any("could not be decoded" in w for w in it.warnings)


def test_random_bytes_and_empty(write) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    path = write("noise.mp4", b"\x00\x00\x00\x18ftypisom" + rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (err,) = list(read_video(path))
    assert isinstance(err, DecodeError) and err.code == "corrupt" and "cannot open the video" in err.reason
    (err,) = list(read_any(write("noise2.mp4", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())))
    assert err.code == "unsupported"
    (err,) = list(read_video(write("empty.mp4", b"")))
    assert err.code == "empty"


class FakeReader:
    """Frames are a grey level equal to their index; some indices fail, get_batch always fails."""

    def __init__(self, n: int, bad: set[int], fps: float = 10.0) -> None:
        self.n, self.bad, self.fps = n, bad, fps

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if i in self.bad:
            raise RuntimeError("[12:00:00] src/video/ffmpeg/threaded_decoder.cc:218: Error sending packet.")
        return np.full((30, 40, 3), i % 256, np.uint8)

    def get_batch(self, indices: list[int]) -> np.ndarray:
        raise RuntimeError("batch failed")

    def get_frame_timestamp(self, indices: list[int]) -> np.ndarray:
        t = np.asarray(indices, dtype=np.float64) / self.fps
        return np.stack([t, t + 1 / self.fps], axis=1)

    def get_avg_fps(self) -> float:
        return self.fps


def test_clip_without_any_decodable_frame_is_an_error(write) -> None:  # type: ignore[no-untyped-def]
    path = write("fake.mp4", b"not read by the fake")
    bad = set(range(30, 60))  # all of the second 3-second clip
    cfg = IngestConfig(clip_seconds=3.0, frames_per_clip=4)
    out = list(read_video(path, cfg, reader_factory=lambda *a, **k: FakeReader(100, bad | {11})))
    kinds = [type(r).__name__ for r in out]
    assert kinds == ["DecodedItem", "DecodeError", "DecodedItem", "DecodedItem"]
    first, err = out[0], out[1]
    assert isinstance(first, DecodedItem) and isinstance(err, DecodeError)
    assert first.frame_ts == [0.3, 1.8, 2.6] and "1 of 4 sampled frames" in first.warnings[0]
    assert [np.asarray(im)[0, 0, 0] for im in first.images] == [3, 18, 26]
    assert (err.start_s, err.end_s, err.code) == (3.0, 6.0, "corrupt")
    assert "clip 3.00-6.00 s" in err.reason and "none of its 4 sampled frames" in err.reason
    assert "Error sending packet" in err.reason
