"""Clips that follow the content (ingest.shots): real H.264 videos made with ffmpeg with cuts, static slides and a
long shot at known times, read by the real reader; the planning rules on hand-made change curves."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from shot_videos import CUT_TIMES, cuts_video, long_shot, slides_video

from mmrag.config import IngestConfig, ShotsConfig
from mmrag.ingest import shots
from mmrag.ingest.readers import DecodedItem, read_video
from mmrag.ingest.video import clip_windows

pytestmark = pytest.mark.unit

FPS = 15  # of the lavfi videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg makes the test videos")
    d = tmp_path_factory.mktemp("shots")
    return {
        "cuts": cuts_video(d / "cuts.mp4"),  # 12 s, cuts at 3, 6, 9
        "slides": slides_video(d / "slides.mp4", n=3, seconds=25.0, fps=5),  # 75 s, changes at 25, 50
        "long": long_shot(d / "long.mp4", 22.0),  # one moving shot
    }


def clips(path: Path, **ingest: object) -> list[DecodedItem]:
    out = list(read_video(path, IngestConfig(thumbnail_px=64, max_pixels=60_000, **ingest)))  # type: ignore[arg-type]
    assert all(isinstance(r, DecodedItem) for r in out), out
    return out  # type: ignore[return-value]


def bounds(items: list[DecodedItem]) -> list[tuple[float, float]]:
    return [(it.start_s or 0.0, it.end_s or 0.0) for it in items]


def check_frames(items: list[DecodedItem]) -> None:
    for it in items:
        assert it.frame_ts is not None and len(it.frame_ts) == len(it.images) >= 1
        assert all(b > a for a, b in itertools.pairwise(it.frame_ts))
        assert all((it.start_s or 0) - 1e-6 <= t < (it.end_s or 0) for t in it.frame_ts), "frames inside their clip"
    assert [it.index for it in items] == list(range(len(items)))


# ------------------------------------------------------------------------------------- real videos
def test_cuts_start_new_clips_at_the_cut_frame(videos: dict[str, Path]) -> None:
    items = clips(videos["cuts"], clip_seconds=10.0)
    got = bounds(items)
    expected = [0.0, *CUT_TIMES, 12.0]
    assert len(got) == 4
    # the cut frame's own start time: exact to the frame, well inside "one sampled-frame step"
    assert [s for s, _ in got] == pytest.approx(expected[:-1], abs=0.5 / FPS)
    assert [e for _, e in got] == pytest.approx(expected[1:], abs=0.5 / FPS)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(got)), "no gap, no overlap across a cut"
    check_frames(items)
    # the static colour bars (3-6 s) are one distinct frame; the moving patterns keep all four
    assert [len(it.images) for it in items] == [4, 1, 4, 4]


def test_option_off_keeps_fixed_windows(videos: dict[str, Path]) -> None:
    items = clips(videos["cuts"], clip_seconds=5.0, shots=ShotsConfig(enabled=False))
    assert bounds(items) == [(0.0, 5.0), (5.0, 10.0), (10.0, pytest.approx(12.0, abs=1e-6))]
    assert [len(it.images) for it in items] == [4, 4, 4], "every sampled frame, duplicates too"


def test_long_shot_is_split_at_clip_seconds_with_the_tail_folded(videos: dict[str, Path]) -> None:
    on = bounds(clips(videos["long"], clip_seconds=10.0))
    off = bounds(clips(videos["long"], clip_seconds=10.0, shots=ShotsConfig(enabled=False)))
    # 22 s: two 10 s clips; the 2 s remainder (< MIN_TAIL_FRACTION of a clip) is folded into the last
    assert on == off == [(0.0, 10.0), (10.0, pytest.approx(22.0, abs=1e-6))]


def test_static_slides_give_one_clip_per_slide(videos: dict[str, Path]) -> None:
    items = clips(videos["slides"], clip_seconds=10.0, frames_per_clip=4)
    assert bounds(items) == [(0.0, 25.0), (25.0, 50.0), (50.0, pytest.approx(75.0, abs=1e-6))]
    assert [len(it.images) for it in items] == [1, 1, 1], "identical frames are kept once"
    check_frames(items)
    shown = [np.asarray(it.images[0].convert("L"), dtype=np.int16) for it in items]
    assert all(np.abs(a - b).mean() > 1 for a, b in itertools.combinations(shown, 2)), "three different slides"
    off = clips(videos["slides"], clip_seconds=10.0, frames_per_clip=4, shots=ShotsConfig(enabled=False))
    assert len(off) == 8 and all(len(it.images) == 4 for it in off)
    # a slide held past max_merged_seconds goes on in a new clip (its talk stays citable to the stretch)
    capped = clips(videos["slides"], clip_seconds=10.0, frames_per_clip=4, shots=ShotsConfig(max_merged_seconds=20))
    assert bounds(capped)[:3] == [(0.0, 20.0), (20.0, 25.0), (25.0, 45.0)]
    assert all(e - s <= 20.0 + 1e-6 for s, e in bounds(capped))


# ------------------------------------------------------------------------------ planning rules
def _starts(seconds: float, fps: float = 10.0) -> np.ndarray:
    return np.arange(int(seconds * fps)) / fps


def test_motion_is_not_a_cut_but_a_jump_above_it_is() -> None:
    starts = _starts(20.0)
    rng = np.random.default_rng(0)
    change = (20 + 5 * rng.standard_normal(starts.size)).astype(np.float32)  # a busy moving scene
    change[0] = 0
    change[50] = 45  # a little above the motion: not a cut
    change[120] = 160  # a hard cut
    assert shots.find_cuts(change, starts, ShotsConfig()) == [120]


def test_cuts_closer_than_min_shot_keep_the_strongest() -> None:
    starts = _starts(20.0)
    change = np.zeros(starts.size, np.float32)
    change[[40, 45, 48, 100, 195]] = [30, 90, 50, 20, 80]  # 195: 0.5 s before the end
    cfg = ShotsConfig(min_shot_seconds=1.0)
    assert shots.find_cuts(change, starts, cfg) == [45, 100]
    assert shots.find_cuts(change, starts, cfg.model_copy(update={"min_shot_seconds": 0.0})) == [40, 45, 48, 100, 195]
    assert shots.find_cuts(change, starts, cfg.model_copy(update={"min_content": 40.0})) == [45]


def test_a_piece_merges_only_when_all_its_frames_repeat_the_clip_before() -> None:
    starts = _starts(40.0, fps=2.0)  # one signature per frame
    a, b = np.full((36, 64), 200, np.uint8), np.full((36, 64), 200, np.uint8)
    b[0:9, 0:8] = 120  # one cell changes: a new line of text
    sigs = np.stack([a] * 30 + [b] * 50)  # b from 15 s on, no cut (one cell is not enough)
    change = np.zeros(starts.size, np.float32)
    analysis = shots.Analysis(change=change, sig_index=np.arange(starts.size), signatures=sigs)
    w = shots.plan_windows(analysis, starts, 40.0, 10.0, 0.0, ShotsConfig(), clip_windows)
    # 0-10 static; 10-20 holds the change (not merged); 20-30 and 30-40 repeat 10-20's last frame: merged
    assert w == [(0.0, 10.0), (10.0, 40.0)]
    assert not shots.near_duplicate(a, b, 2.5) and shots.near_duplicate(a, a + 2, 2.5)


def test_overlap_stays_inside_a_shot() -> None:
    starts = _starts(30.0)
    change = np.zeros(starts.size, np.float32)
    change[120] = 100
    rng = np.random.default_rng(1)
    sigs = rng.integers(0, 256, (starts.size, 36, 64), dtype=np.uint8)  # every frame different: no merging
    analysis = shots.Analysis(change=change, sig_index=np.arange(starts.size), signatures=sigs)
    w = shots.plan_windows(analysis, starts, 30.0, 10.0, 2.0, ShotsConfig(), clip_windows)
    assert w == [(0.0, 10.0), (8.0, 12.0), (12.0, 22.0), (20.0, 30.0)]


class SmallFails:
    """A reader whose small (64x36) decode cannot be opened; frames are grey levels that keep changing."""

    def __init__(self, *a: object, width: int = -1, **k: object) -> None:
        if width == shots.SIZE[0]:
            raise RuntimeError("cannot scale")

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full((30, 40, 3), (i * 37) % 256, np.uint8)

    def get_batch(self, idx: list[int]) -> np.ndarray:
        return np.stack([self[i] for i in idx])

    def get_frame_timestamp(self, idx: list[int]) -> np.ndarray:
        t = np.asarray(idx, dtype=np.float64) / 10
        return np.stack([t, t + 0.1], axis=1)

    def get_avg_fps(self) -> float:
        return 10.0


def test_failed_detection_falls_back_to_fixed_windows(write) -> None:  # type: ignore[no-untyped-def]
    out = list(read_video(write("v.mp4", b"x" * 100), IngestConfig(clip_seconds=4.0), reader_factory=SmallFails))
    assert [(it.start_s, it.end_s) for it in out] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert "shot detection failed (RuntimeError: cannot scale)" in out[0].warnings[0]
    assert out[1].warnings == []


class OneBadFrame(SmallFails):
    """Small frames; ``get_batch`` fails for any batch that holds frame 100, as decord does."""

    def __init__(self) -> None:
        self.calls = 0

    def __len__(self) -> int:
        return 300

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full((36, 64, 3), 200 if i < 150 else 40, np.uint8)

    def get_batch(self, idx: list[int]) -> np.ndarray:
        self.calls += 1
        if 100 in idx:
            raise RuntimeError("Error sending packet")
        return np.stack([self[i] for i in idx])


def test_a_bad_frame_costs_its_neighbourhood_not_the_video() -> None:
    reader = OneBadFrame()
    starts = np.arange(300) / 10.0
    a = shots.analyse(reader, starts, signature_fps=1.0)
    assert reader.calls < 20, "split retries, not one seek per frame"
    lost = set(range(96, 128))  # the 32-frame part of the first 256-frame chunk that holds frame 100
    sig = a.sig_index.tolist()
    assert not lost & set(sig) and {90, 128} <= set(sig), "signatures resume at the first frame after the loss"
    assert len(sig) >= 25 and min(np.diff(sig)) == 10
    assert a.change[150] > 100 and shots.find_cuts(a.change, starts, ShotsConfig()) == [150]
