"""Clips that follow the content: shot boundaries and near-duplicate frames (``ingest.shots``).

Every frame is decoded once more at 64x36 (FFmpeg scales while decoding; decoding dominates, so taking every
frame costs about what taking a few per second does, measured in benchmarks/results/ingest_shots.md) and
compared with the one before it. A cut is a change above ``min_content`` plus ``adaptive_ratio`` times the median
change around it, so a new slide on a still picture is a cut and motion is not; cuts closer than
``min_shot_seconds`` keep only the strongest. Each shot is then split at ``clip_seconds`` with the fixed-window
rule (:func:`mmrag.ingest.video.clip_windows`), and a piece whose frames all repeat the previous clip's last frame
is merged into that clip, so a slide held for minutes is one clip. Clip bounds are frame start times, exact.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from mmrag.config import ShotsConfig

#: Size of the analysis frames (width, height); small enough that noise averages out, large enough for a cut.
SIZE = (64, 36)
#: Frames per ``get_batch`` call of the analysis pass (64x36x3 bytes each).
CHUNK = 256
#: Grid (rows, columns) of cells compared for near-duplicates; 36 / 4 and 64 / 8 divide exactly.
GRID = (4, 8)

WindowFn = Callable[[float, float, float, float], list[tuple[float, float]]]


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the small decode of a video gives: per-frame change and sparse grey signatures."""

    change: np.ndarray
    """``change[i]``: :func:`shot_change` of the YCbCr frames i-1 and i; 0 for frame 0 and next to frames that
    did not decode."""
    sig_index: np.ndarray
    """Frame indices that have a signature, increasing."""
    signatures: np.ndarray
    """Grey 36x64 uint8 frames for ``sig_index``."""


def analyse(reader: Any, starts: np.ndarray, signature_fps: float, *, limit: int | None = None) -> Analysis:
    """Decode frames ``0 .. limit-1`` of ``reader`` (already opened at :data:`SIZE`) chunk by chunk.

    Frames that do not decode (see :func:`_frames`) get no change score (no cut next to them) and no
    signature. Memory: the change array plus ``signature_fps`` small frames a second."""
    n = len(reader) if limit is None else limit
    change = np.zeros(n, dtype=np.float32)
    sig_idx: list[int] = []
    sigs: list[np.ndarray] = []
    next_sig = float(starts[0]) if n else 0.0
    prev: np.ndarray | None = None
    for lo in range(0, n, CHUNK):
        idx = list(range(lo, min(n, lo + CHUNK)))
        for i, frame in zip(idx, _frames(reader, idx), strict=True):
            if frame is None:
                prev = None
                continue
            ycc = np.asarray(Image.fromarray(frame).convert("YCbCr"), dtype=np.int16)
            if prev is not None:
                change[i] = shot_change(ycc, prev)
            prev = ycc
            if starts[i] >= next_sig - 1e-9:
                sig_idx.append(i)
                sigs.append(ycc[:, :, 0].astype(np.uint8))
                next_sig = float(starts[i]) + 1.0 / signature_fps
    with contextlib.suppress(Exception):
        reader.seek(0)  # idle decord's decoder thread (see video._park)
    return Analysis(
        change=change,
        sig_index=np.asarray(sig_idx, dtype=np.int64),
        signatures=np.stack(sigs) if sigs else np.zeros((0, SIZE[1], SIZE[0]), np.uint8),
    )


def _frames(reader: Any, idx: Sequence[int], *, split: int = 8) -> list[np.ndarray | None]:
    """Small frames for ``idx``; ``None`` where a frame did not decode. decord fails a whole batch for one bad frame,
    so a failed batch is retried in ``split`` parts, down to parts of about 32 frames, which are then given up on:
    one frame at a time would seek back to a keyframe for every frame, minutes on a damaged long video."""
    try:
        batch = reader.get_batch(list(idx))
        arr = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        return [_small(arr[j]) for j in range(len(idx))]
    except Exception:
        if len(idx) <= 32:
            return [None] * len(idx)
    step = -(-len(idx) // split)
    return [f for lo in range(0, len(idx), step) for f in _frames(reader, idx[lo : lo + step], split=split)]


def _small(frame: np.ndarray) -> np.ndarray:
    """The frame at :data:`SIZE` (a reader that ignored the requested size gets resized here)."""
    if frame.shape[1] == SIZE[0] and frame.shape[0] == SIZE[1]:
        return np.ascontiguousarray(frame[:, :, :3])
    return np.asarray(Image.fromarray(frame[:, :, :3]).resize(SIZE, Image.Resampling.BOX))


def signature(img: Image.Image) -> np.ndarray:
    """A decoded frame as the grey 64x36 signature :func:`near_duplicate` compares."""
    return np.asarray(img.convert("RGB").resize(SIZE, Image.Resampling.BOX).convert("YCbCr"))[:, :, 0]


def cell_changes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean |difference| (0-255) of each :data:`GRID` cell between two small frames (HxW or HxWxC), the largest
    over channels, flattened. Compression noise averages out inside a cell; a local change does not."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.float32)
    if d.ndim == 2:
        d = d[:, :, None]
    rows, cols = GRID
    h, w, c = d.shape
    return d.reshape(rows, h // rows, cols, w // cols, c).mean(axis=(1, 3)).max(axis=-1).ravel()


def shot_change(a: np.ndarray, b: np.ndarray) -> float:
    """How much of the picture changed: the mean of the quarter of cells that changed most. A cut or a new
    slide moves many cells; a ticking clock or one person walking moves one or two, which this discounts."""
    cells = np.sort(cell_changes(a, b))
    return float(cells[-max(1, cells.size // 4) :].mean())


def near_duplicate(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """Whether two signatures show the same picture: no grid cell differs by more than ``threshold``."""
    return float(cell_changes(a, b).max()) <= threshold


def find_cuts(change: np.ndarray, starts: np.ndarray, cfg: ShotsConfig) -> list[int]:
    """Frame indices where a new shot starts (not 0), increasing.

    A cut changes by at least ``min_content + adaptive_ratio * baseline``, the baseline being the median change
    of the frames within ``window_seconds`` each side (itself excluded): on a still picture (baseline ~0) a new
    slide is enough, in a moving scene only a jump well above the motion is. Candidates are taken strongest first; one
    within ``min_shot_seconds`` of a taken cut, of the start or of the end is dropped."""
    n = len(change)
    if n < 2:
        return []
    fps = (n - 1) / max(float(starts[-1] - starts[0]), 1e-9)
    w = max(1, round(cfg.window_seconds * fps))
    cand = np.flatnonzero(change >= cfg.min_content)
    cand = cand[cand > 0]
    # the neighbours of every candidate at once (a moving video makes most frames candidates): a sliding view
    # over the change curve padded with NaN, the candidate itself and frame 0 (no predecessor) masked out
    padded = np.concatenate([np.full(w, np.nan), change.astype(np.float64), np.full(w, np.nan)])
    padded[w] = np.nan
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)
    keep: list[int] = []
    for lo in range(0, cand.size, 8192):
        part = cand[lo : lo + 8192]
        rows = view[part].copy()
        rows[:, w] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: a one- or two-frame video
            base = np.nan_to_num(np.nanmedian(rows, axis=1), nan=0.0)
        keep += part[change[part] >= cfg.min_content + cfg.adaptive_ratio * base].tolist()
    end = float(starts[-1]) + (float(starts[-1] - starts[-2]) if n > 1 else 0.0)
    taken: list[float] = []  # times of the cuts taken, sorted
    out: list[int] = []
    for i in sorted(keep, key=lambda k: -float(change[k])):
        t = float(starts[i])
        if t - starts[0] < cfg.min_shot_seconds or end - t < cfg.min_shot_seconds:
            continue
        at = bisect.bisect_left(taken, t)
        if (at == 0 or t - taken[at - 1] >= cfg.min_shot_seconds) and (
            at == len(taken) or taken[at] - t >= cfg.min_shot_seconds
        ):
            taken.insert(at, t)
            out.append(i)
    return sorted(out)


def plan_windows(
    analysis: Analysis,
    starts: np.ndarray,
    t_end: float,
    clip_seconds: float,
    overlap_seconds: float,
    cfg: ShotsConfig,
    windows: WindowFn,
) -> list[tuple[float, float]]:
    """Clip windows over ``[starts[0], t_end]``: one run of ``windows`` per shot, repeats merged.

    ``windows(duration, clip_seconds, overlap_seconds, t0)`` is the fixed-window rule applied inside each shot
    (overlap stays inside a shot: a cut is a hard boundary). A piece merges into the clip before it, in the same
    shot, when each of its signatures is a near-duplicate of the last signature that clip holds and the merged clip
    stays within ``cfg.max_merged_seconds``."""
    cuts = find_cuts(analysis.change, starts, cfg)
    bounds = [float(starts[0]), *(float(starts[i]) for i in cuts), t_end]
    sig_t = starts[analysis.sig_index] if analysis.sig_index.size else np.zeros(0)
    out: list[tuple[float, float]] = []
    for s, e in itertools.pairwise(bounds):
        pieces = windows(e - s, clip_seconds, overlap_seconds, s)
        out.append(pieces[0])
        for ps, pe in pieces[1:]:
            prev_s, prev_e = out[-1]
            ref = np.flatnonzero((sig_t >= prev_s - 1e-9) & (sig_t < prev_e - 1e-9))
            mine = np.flatnonzero((sig_t >= ps - 1e-9) & (sig_t < pe - 1e-9))
            if ref.size and mine.size and pe - prev_s <= cfg.max_merged_seconds + 1e-9:
                last = analysis.signatures[ref[-1]]
                if all(near_duplicate(analysis.signatures[k], last, cfg.duplicate_threshold) for k in mine):
                    out[-1] = (prev_s, pe)
                    continue
            out.append((ps, pe))
    return out


def distinct_frames(images: Sequence[Image.Image], threshold: float) -> list[int]:
    """Positions of the frames to keep: each one that is not a near-duplicate of the last kept one."""
    keep: list[int] = []
    last: np.ndarray | None = None
    for k, img in enumerate(images):
        sig = signature(img)
        if last is None or not near_duplicate(sig, last, threshold):
            keep.append(k)
            last = sig
    return keep


def content_windows(
    open_small: Callable[[], Any],
    starts: np.ndarray,
    t_end: float,
    clip_seconds: float,
    overlap_seconds: float,
    cfg: ShotsConfig,
    windows: WindowFn,
) -> tuple[list[tuple[float, float]], str | None]:
    """:func:`plan_windows` for the frames starting before ``t_end``, reading them through ``open_small()`` (a
    reader at :data:`SIZE`). If the small decode cannot be opened, the fixed windows come back with a note
    saying so: the video is still read, only not cut by content."""
    limit = int(np.searchsorted(starts, t_end, side="left"))
    try:
        analysis = analyse(open_small(), starts, cfg.signature_fps, limit=max(1, limit))
    except Exception as e:
        fixed = windows(t_end - float(starts[0]), clip_seconds, overlap_seconds, float(starts[0]))
        return fixed, f"shot detection failed ({type(e).__name__}: {str(e)[:160]}); clips are fixed windows"
    return plan_windows(analysis, starts[: max(1, limit)], t_end, clip_seconds, overlap_seconds, cfg, windows), None
