"""Test media made on the spot: speech synthesized with espeak-ng at known times, muxed with ffmpeg.

``speech_wav`` / ``speech_video`` place each sentence at a chosen second of a silent track, so a test knows when
every phrase is spoken. They need Debian's ``espeak-ng`` and ``ffmpeg`` (deploy/setup.sh installs them for
``test``); :func:`require_tools` skips a test where they are missing.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

RATE = 22_050  # espeak-ng's own output rate

#: Sentences and the second each starts at: three 10 s clips, one sentence in each (tiny.en transcribes them well).
SENTENCES: tuple[tuple[float, str], ...] = (
    (1.0, "The weather in Paris is sunny today."),
    (12.0, "Please remember to water the garden plants."),
    (23.0, "Our meeting about the budget starts at noon."),
)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install espeak-ng ffmpeg; deploy/setup.sh test does)")


def _say(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def speech_wav(
    path: Path, sentences: Sequence[tuple[float, str]] = SENTENCES, duration: float = 30.0
) -> list[tuple[float, float, str]]:
    """A mono WAV of ``duration`` seconds, silent but for each sentence spoken from its start second.

    Returns ``(start, end, sentence)`` per sentence, end being when its speech stops."""
    require_tools("espeak-ng")
    track = np.zeros(int(duration * RATE), dtype=np.int16)
    spans = []
    for k, (start, text) in enumerate(sentences):
        voice = _say(text, path.with_name(f"{path.stem}-s{k}.wav"))
        a = int(start * RATE)
        b = min(track.size, a + voice.size)
        track[a:b] = voice[: b - a]
        spans.append((start, b / RATE, text))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(track.tobytes())
    return spans


def speech_video(
    path: Path, sentences: Sequence[tuple[float, str]] = SENTENCES, duration: float = 30.0, size: str = "320x240"
) -> list[tuple[float, float, str]]:
    """An H.264/AAC MP4 of ``duration`` seconds: ffmpeg's test pattern at 10 fps over :func:`speech_wav`'s track."""
    require_tools("espeak-ng", "ffmpeg")
    wav = path.with_suffix(".wav")
    spans = speech_wav(wav, sentences, duration)
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate=10:duration={duration}", "-i", str(wav),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return spans


def encode_audio(wav: Path, out: Path) -> Path:
    """``wav`` re-encoded by ``out``'s extension (.mp3, .flac, .m4a, .ogg; .mp4: AAC in MP4 without video)."""
    require_tools("ffmpeg")
    codec = {".mp3": "libmp3lame", ".flac": "flac", ".m4a": "aac", ".ogg": "libvorbis", ".mp4": "aac"}[out.suffix]
    _ffmpeg("-i", str(wav), "-vn", "-c:a", codec, str(out))
    return out


def silent_video(path: Path, duration: float = 6.0, tone_hz: float | None = None) -> Path:
    """A video whose track is silence, or a steady tone (music-like sound without words) when ``tone_hz`` is set."""
    require_tools("ffmpeg")
    src = f"sine=frequency={tone_hz}:duration={duration}" if tone_hz else f"anullsrc=r=16000:cl=mono:d={duration}"
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=160x120:rate=5:duration={duration}", "-f", "lavfi", "-i", src,
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *args], check=True, capture_output=True)
