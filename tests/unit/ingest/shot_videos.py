"""Real H.264 test videos with content changes at known times, made with ffmpeg (no file is checked in)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

#: (lavfi source, seconds) of the hard-cut video: moving pattern, static bars, zooming fractal, moving pattern.
CUT_SEGMENTS = [
    ("testsrc2=size=320x180:rate=15", 3.0),
    ("smptebars=size=320x180:rate=15", 3.0),
    ("mandelbrot=size=320x180:rate=15", 3.0),
    ("testsrc=size=320x180:rate=15", 3.0),
]
CUT_TIMES = [3.0, 6.0, 9.0]


def _run(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def _h264(out: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", str(out)]


def cuts_video(out: Path) -> Path:
    """Four lavfi sources back to back: hard cuts at :data:`CUT_TIMES`."""
    args: list[str] = []
    for src, secs in CUT_SEGMENTS:
        args += ["-f", "lavfi", "-t", str(secs), "-i", src]
    n = len(CUT_SEGMENTS)
    graph = "".join(f"[{i}:v]setsar=1[v{i}];" for i in range(n)) + "".join(f"[v{i}]" for i in range(n))
    _run([*args, "-filter_complex", graph + f"concat=n={n}:v=1:a=0[out]", "-map", "[out]", *_h264(out)])
    return out


def slide(k: int, size: tuple[int, int] = (640, 360)) -> Image.Image:
    """A white slide with a title and a few lines of black text, different for every ``k``."""
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=22)
    d.text((30, 20), f"Slide {k + 1}: results of part {chr(65 + k)}", fill="black", font=font)
    for line in range(3):
        words = " ".join(f"item{(k * 7 + line * 3 + j) % 19}" for j in range(3 + (k + line) % 3))
        d.text((50, 90 + 50 * line), f"- {words}", fill=(20, 20, 20), font=font)
    return img


def slides_video(out: Path, n: int, seconds: float, fps: int = 10) -> Path:
    """``n`` static slides, each shown ``seconds``: changes at ``k * seconds``."""
    args: list[str] = []
    for k in range(n):
        png = out.with_name(f"{out.stem}-{k}.png")
        slide(k).save(png)
        args += ["-loop", "1", "-framerate", str(fps), "-t", str(seconds), "-i", str(png)]
    graph = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0[out]"
    _run([*args, "-filter_complex", graph, "-map", "[out]", "-r", str(fps), *_h264(out)])
    return out


def long_shot(out: Path, seconds: float) -> Path:
    """One continuous moving shot (testsrc2's counter and moving shapes change every frame)."""
    _run(["-f", "lavfi", "-t", str(seconds), "-i", "testsrc2=size=320x180:rate=15", *_h264(out)])
    return out
