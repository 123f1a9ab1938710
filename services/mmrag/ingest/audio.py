"""Audio tracks: decoding them (PyAV, the FFmpeg binding faster-whisper uses) and audio-only files as items.

An audio file (wav, mp3, flac, m4a, ogg, or a video container whose video stream is missing) has no frames, so
it becomes items of modality ``audio``: windows of ``ingest.clip_seconds`` like a video's clips, each with its
start/end seconds and a drawn waveform of its stretch as the picture. The picture is what the page, the item
fetch and the visual channel show and embed (nothing downstream has to handle an item without an image); the
words come from the transcription stage (:mod:`mmrag.ingest.speech`), which fills each item's text.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from mmrag.ingest.common import default_cfg, err_msg, read_head, source_name, thumbnail_png
from mmrag.ingest.records import DecodedItem, DecodeError
from mmrag.ingest.video import clip_windows

if TYPE_CHECKING:
    from mmrag.config import IngestConfig

#: Whisper's input rate.
SAMPLE_RATE = 16_000
#: The rate the waveform pictures are drawn from (one decode of a long file stays small: 1 h is 29 MB).
WAVEFORM_RATE = 2_000
WAVEFORM_SIZE = (640, 160)


class AudioError(ValueError):
    """The audio track cannot be decoded (missing, truncated, an unsupported codec)."""


def streams(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(video streams, audio streams) in a container; (0, 0) when it cannot be opened."""
    import av

    try:
        with av.open(os.fspath(path), mode="r", metadata_errors="ignore") as c:
            return len(c.streams.video), len(c.streams.audio)
    except Exception:
        return 0, 0


def decode_audio(
    path: str | os.PathLike[str], *, rate: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """The first audio stream as mono float32 at ``rate`` Hz (at most ``max_seconds`` of it); see
    :func:`iter_audio` for the errors."""
    return np.concatenate(list(iter_audio(path, rate=rate, max_seconds=max_seconds)))


def iter_audio(
    path: str | os.PathLike[str],
    *,
    rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    block_seconds: float = 60.0,
) -> Iterator[np.ndarray]:
    """The first audio stream as mono float32 at ``rate`` Hz, in blocks of about ``block_seconds`` (so a long
    track is never whole in memory), at most ``max_seconds`` in all.

    Raises :class:`AudioError` when there is no audio stream or nothing decodes; frames that fail in the middle
    (a damaged stretch) are skipped, and a track that breaks off later ends there, so a partly corrupt track
    still gives what is readable."""
    import av

    limit = None if max_seconds is None else int(max_seconds * rate)
    block = max(1, int(block_seconds * rate))
    parts: list[np.ndarray] = []
    pending = got = 0

    def take() -> np.ndarray:
        nonlocal parts, pending
        out = np.concatenate(parts).astype(np.float32) / 32768.0
        parts, pending = [], 0
        return out

    try:
        with av.open(os.fspath(path), mode="r", metadata_errors="ignore") as c:
            if not c.streams.audio:
                raise AudioError("the file has no audio stream")
            resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=rate)
            frames = c.decode(audio=0)
            while limit is None or got < limit:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.InvalidDataError:
                    continue  # a damaged packet: skip it, keep the rest of the track
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    if limit is not None:
                        arr = arr[: limit - got]
                    parts.append(arr)
                    got += arr.size
                    pending += arr.size
                if pending >= block:
                    yield take()
            if limit is None or got < limit:
                for out in resampler.resample(None):  # flush
                    parts.append(out.to_ndarray().reshape(-1))
                    got += parts[-1].size
    except AudioError:
        raise
    except Exception as e:
        if not got:
            raise AudioError(f"the audio track cannot be decoded ({err_msg(e)[:200]})") from e
    if not got:
        raise AudioError("the audio track holds no samples")
    if parts:
        yield take()


def waveform_image(samples: np.ndarray, size: tuple[int, int] = WAVEFORM_SIZE) -> Image.Image:
    """A drawn waveform (peak per pixel column, dark on white) standing in as an audio item's picture."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    mid = h // 2
    draw.line([(0, mid), (w - 1, mid)], fill=(200, 200, 200))
    if samples.size:
        cols = np.array_split(np.abs(samples), min(w, samples.size))
        peaks = np.array([c.max() if c.size else 0.0 for c in cols])
        scale = (h / 2 - 4) / max(float(peaks.max()), 1e-3)
        step = w / len(peaks)
        for i, p in enumerate(peaks):
            x = int(i * step)
            dy = max(1, int(p * scale))
            draw.line([(x, mid - dy), (x, mid + dy)], fill=(40, 70, 140))
    return img


def read_audio(
    path: str | os.PathLike[str], cfg: IngestConfig | None = None, *, source: str | None = None
) -> Iterator[DecodedItem | DecodeError]:
    """Yield one ``audio`` item per window of ``cfg.clip_seconds`` (overlapping by ``cfg.clip_overlap_seconds``),
    in time order, or an error for a file whose audio cannot be decoded."""
    cfg = default_cfg(cfg)
    src = source_name(path, source)
    _, problem = read_head(path, src, cfg, 16)
    if problem is not None:
        yield problem
        return
    limit = min(cfg.max_video_seconds, cfg.speech.max_audio_seconds)
    try:
        wave = decode_audio(path, rate=WAVEFORM_RATE, max_seconds=limit + 1.0)
    except AudioError as e:
        yield DecodeError(src, f"cannot read the audio: {e}; the file is truncated, corrupt or not audio", "corrupt")
        return
    duration = wave.size / WAVEFORM_RATE
    if duration <= 0:
        yield DecodeError(src, "the audio track is empty", "empty")
        return
    if duration > limit:
        duration = limit
        yield DecodeError(
            src,
            f"only the first {limit:g} s of the audio were read (ingest.max_video_seconds, "
            "ingest.speech.max_audio_seconds)",
            "skipped",
        )
    for k, (s, e) in enumerate(clip_windows(duration, cfg.clip_seconds, cfg.clip_overlap_seconds)):
        part = wave[math.floor(s * WAVEFORM_RATE) : math.ceil(e * WAVEFORM_RATE)]
        img = waveform_image(part)
        yield DecodedItem(
            modality="audio",
            source=src,
            index=k,
            images=[img],
            thumbnail_png=thumbnail_png(img, cfg.thumbnail_px),
            width=img.width,
            height=img.height,
            start_s=round(s, 6),
            end_s=round(e, 6),
        )
