"""Video clips: windows over the whole video (fixed, or following the content), a few frames sampled from each.

Decoding goes clip by clip: only one clip's sampled frames are in memory at a time, and decord
scales them down to ``ingest.max_pixels`` while decoding. decord's ``get_batch`` fails as a whole
when one frame cannot be decoded, so a failed batch is retried frame by frame and the bad frames
are skipped; a clip is an error only when none of its frames decode.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from mmrag.ingest import shots
from mmrag.ingest.common import default_cfg, err_msg, read_head, source_name, thumbnail_png
from mmrag.ingest.pixels import fit_size
from mmrag.ingest.records import DecodedItem, DecodeError

if TYPE_CHECKING:
    from mmrag.config import IngestConfig

#: A remainder shorter than this fraction of ``clip_seconds`` is folded into the last clip
#: instead of becoming a sliver clip of its own.
MIN_TAIL_FRACTION = 0.25


class FrameReader(Protocol):
    """The part of ``decord.VideoReader`` the reader uses (a test can pass a fake)."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...
    def get_batch(self, indices: Sequence[int]) -> Any: ...
    def get_frame_timestamp(self, indices: Sequence[int]) -> np.ndarray: ...
    def get_avg_fps(self) -> float: ...


ReaderFactory = Callable[..., FrameReader]


def _decord_reader(path: str, *, width: int = -1, height: int = -1, num_threads: int = 1) -> FrameReader:
    from decord import VideoReader, cpu

    return VideoReader(path, ctx=cpu(0), width=width, height=height, num_threads=num_threads)


def clip_windows(
    duration: float, clip_seconds: float, overlap_seconds: float, t0: float = 0.0
) -> list[tuple[float, float]]:
    """Windows ``(start, end)`` of ``clip_seconds`` every ``clip_seconds - overlap_seconds`` covering
    ``[t0, t0 + duration]``. The last may be shorter; a remainder under ``MIN_TAIL_FRACTION`` of a
    clip extends the previous window instead. A video shorter than one clip gives one window."""
    step = clip_seconds - overlap_seconds
    if step <= 0:
        raise ValueError("clip_overlap_seconds must be smaller than clip_seconds")
    end_t = t0 + max(duration, 0.0)
    windows: list[tuple[float, float]] = []
    start = t0
    while True:
        end = min(start + clip_seconds, end_t)
        windows.append((start, end))
        if end >= end_t - 1e-9:
            break
        start = t0 + len(windows) * step
        if end_t - start < MIN_TAIL_FRACTION * clip_seconds and end_t - end < MIN_TAIL_FRACTION * clip_seconds:
            windows[-1] = (windows[-1][0], end_t)
            break
    return windows


def sample_indices(starts: np.ndarray, window: tuple[float, float], n: int) -> list[int]:
    """Up to ``n`` frame indices spread uniformly over ``window``: the frame shown at the middle of
    each of ``n`` equal slices (``starts`` are the frames' presentation times, increasing)."""
    s, e = window
    first = max(0, int(np.searchsorted(starts, s, side="right")) - 1)
    last = max(first, int(np.searchsorted(starts, e, side="left")) - 1)
    targets = s + (np.arange(n) + 0.5) * (e - s) / n
    idx = np.clip(np.searchsorted(starts, targets, side="right") - 1, first, last)
    return sorted({int(i) for i in idx})


def read_video(
    path: str | os.PathLike[str],
    cfg: IngestConfig | None = None,
    *,
    source: str | None = None,
    num_threads: int = 1,
    reader_factory: ReaderFactory | None = None,
) -> Iterator[DecodedItem | DecodeError]:
    """Yield one :class:`DecodedItem` per clip (``modality="clip"``), in time order, or errors.

    Clips are ``cfg.clip_seconds`` long, overlap by ``cfg.clip_overlap_seconds`` and cover the whole
    video; each holds ``cfg.frames_per_clip`` frames sampled uniformly (fewer when the clip has
    fewer frames), with their timestamps in ``frame_ts``, scaled to at most ``cfg.max_pixels``.
    With ``cfg.shots.enabled`` the windows follow the content instead (cuts, long shots split, repeats
    merged; :mod:`mmrag.ingest.shots`) and a frame nearly identical to the one kept before it is dropped.
    ``num_threads`` is FFmpeg's decoding threads (0: one per core).
    """
    cfg = default_cfg(cfg)
    src = source_name(path, source)
    open_reader = reader_factory or _decord_reader
    _, problem = read_head(path, src, cfg, 16)
    if problem is not None:
        yield problem
        return
    try:
        vr = open_reader(os.fspath(path), num_threads=num_threads)
        n = len(vr)
    except Exception as e:
        yield DecodeError(
            src,
            f"cannot open the video ({_short(e)}): the file is truncated, corrupt, has no video stream, or "
            "uses a codec this FFmpeg build cannot decode",
            "corrupt",
        )
        return
    if n <= 0:
        yield DecodeError(src, "video has no frames", "empty")
        return

    try:
        ts = np.asarray(vr.get_frame_timestamp(list(range(n))), dtype=np.float64).reshape(n, 2)
    except Exception as e:
        yield DecodeError(src, f"cannot read the video's frame timestamps ({_short(e)})", "corrupt")
        return
    starts = ts[:, 0]
    if not (np.all(np.isfinite(ts)) and np.all(np.diff(starts) > 0)):
        # broken or missing timestamps: fall back to a constant frame rate
        fps = float(vr.get_avg_fps() or 25.0)
        starts = np.arange(n) / fps
        ts = np.stack([starts, starts + 1.0 / fps], axis=1)
    t0, duration = float(ts[0, 0]), float(ts[-1, 1] - ts[0, 0])

    # Let FFmpeg scale while decoding when frames are over the pixel budget.
    native = _frame_size(vr, n)
    if native is not None:
        w, h = native
        if w * h > cfg.max_pixels:
            tw, th = fit_size(w, h, cfg.max_pixels)
            tw, th = max(2, math.floor(tw) // 2 * 2), max(2, math.floor(th) // 2 * 2)
            # if reopening fails, keep the full-size reader; frames are then scaled below
            with contextlib.suppress(Exception):
                vr = open_reader(os.fspath(path), width=tw, height=th, num_threads=num_threads)

    read_s = min(duration, cfg.max_video_seconds)
    plan_note = None
    if cfg.shots.enabled:
        # clips follow the content: cut at shot boundaries, static stretches merged (mmrag.ingest.shots)
        _park(vr)  # its decoder thread would spin through the whole second decode
        small = shots.SIZE
        windows, plan_note = shots.content_windows(
            lambda: open_reader(os.fspath(path), width=small[0], height=small[1], num_threads=num_threads),
            starts,
            t0 + read_s,
            cfg.clip_seconds,
            cfg.clip_overlap_seconds,
            cfg.shots,
            clip_windows,
        )
    else:
        windows = clip_windows(read_s, cfg.clip_seconds, cfg.clip_overlap_seconds, t0)
    if duration > cfg.max_video_seconds:
        yield DecodeError(
            src,
            f"video is {duration:.0f} s long; only its first {cfg.max_video_seconds:g} s were read "
            "(ingest.max_video_seconds)",
            "skipped",
        )
    for k, window in enumerate(windows):
        idx = sample_indices(starts, window, cfg.frames_per_clip)
        frames, good, failure = _decode_frames(vr, idx)
        start_s, end_s = round(window[0], 6), round(window[1], 6)
        if not frames:
            yield DecodeError(
                src,
                f"clip {start_s:.2f}-{end_s:.2f} s: none of its {len(idx)} sampled frames could be decoded "
                f"({failure}); that part of the file is corrupt",
                "corrupt",
                start_s=start_s,
                end_s=end_s,
            )
            continue
        images = [_bounded(Image.fromarray(f), cfg.max_pixels) for f in frames]
        failed = len(idx) - len(good)
        if cfg.shots.enabled and len(images) > 1:
            # a near-identical frame adds nothing to the clip but encoder time and stored bytes
            keep = shots.distinct_frames(images, cfg.shots.duplicate_threshold)
            images, good = [images[j] for j in keep], [good[j] for j in keep]
        notes = [plan_note] if plan_note else []  # said once, on the first clip that loads
        plan_note = None
        if failed:
            notes.append(f"{failed} of {len(idx)} sampled frames could not be decoded ({failure})")
        key = images[len(images) // 2]
        yield DecodedItem(
            modality="clip",
            source=src,
            index=k,
            images=images,
            thumbnail_png=thumbnail_png(key, cfg.thumbnail_px),
            width=key.width,
            height=key.height,
            start_s=start_s,
            end_s=end_s,
            frame_ts=[float(starts[i]) for i in good],
            warnings=notes,
        )


def _decode_frames(vr: FrameReader, idx: list[int]) -> tuple[list[np.ndarray], list[int], str]:
    """Frames for ``idx`` as HxWx3 uint8 arrays, the indices that decoded, and the last failure."""
    try:
        batch = _as_numpy(vr.get_batch(idx))
        _park(vr)
        return [batch[j] for j in range(len(idx))], list(idx), ""
    except Exception as e:
        failure = _short(e)
    frames, good = [], []
    for i in idx:
        try:
            frames.append(_as_numpy(vr[i]))
            good.append(i)
        except Exception as e:
            failure = _short(e)
    _park(vr)
    return frames, good, failure


def _park(vr: FrameReader) -> None:
    """Stop decord's decoder thread between clips: after a read it keeps a core 25-90% busy (decoding on,
    measured on 640x480 H.264 and MPEG-4) for as long as the reader lives, and the reader lives while the
    clip is OCR'd, encoded and handed on. ``seek(0)`` idles it; the next ``get_batch`` seeks anyway."""
    seek = getattr(vr, "seek", None)
    if seek is not None:
        with contextlib.suppress(Exception):
            seek(0)


def _frame_size(vr: FrameReader, n: int) -> tuple[int, int] | None:
    """(width, height) of the decoded frames, from the first frame that decodes among a few."""
    for i in sorted({0, n // 2, n - 1}):
        try:
            f = _as_numpy(vr[i])
            return int(f.shape[1]), int(f.shape[0])
        except Exception:
            continue
    return None


def _bounded(img: Image.Image, max_pixels: int) -> Image.Image:
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.width * img.height <= max_pixels:
        return img
    tw, th = fit_size(img.width, img.height, max_pixels)
    return img.resize((max(1, math.floor(tw)), max(1, math.floor(th))), Image.Resampling.BILINEAR)


def _as_numpy(x: Any) -> np.ndarray:
    return x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)


def _short(e: BaseException) -> str:
    """decord errors carry a C++ stack trace; keep the first meaningful line."""
    text = str(e).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Stack trace", "[bt]")):
            # "[21:24:20] /path/threaded_decoder.cc:218: Check failed: ..." -> the message part
            msg = line.rsplit(": ", 1)[-1] if ".cc:" in line else line
            return f"{type(e).__name__}: {msg[:200]}"
    return err_msg(e)
