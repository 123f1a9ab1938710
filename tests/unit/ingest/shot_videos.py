"""Real H.264 test videos with content changes at known times, made with ffmpeg (no file is checked in)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

#: lavfi sources of the hard-cut video: moving pattern, static bars, zooming fractal, moving pattern.
CUT_SOURCES = ["testsrc2", "smptebars", "mandelbrot", "testsrc"]
CUT_TIMES = [3.0, 6.0, 9.0]


def _run(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=600)


def _h264(out: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30", str(out)]


def cuts_video(out: Path, seconds: float = 3.0, size: str = "320x180", fps: int = 15, repeat: int = 1) -> Path:
    """The :data:`CUT_SOURCES` back to back (``repeat`` times), ``seconds`` each: hard cuts every ``seconds``."""
    args: list[str] = []
    for src in CUT_SOURCES * repeat:
        args += ["-f", "lavfi", "-t", str(seconds), "-i", f"{src}=size={size}:rate={fps}"]
    n = len(CUT_SOURCES) * repeat
    graph = "".join(f"[{i}:v]setsar=1[v{i}];" for i in range(n)) + "".join(f"[v{i}]" for i in range(n))
    _run([*args, "-filter_complex", graph + f"concat=n={n}:v=1:a=0[out]", "-map", "[out]", *_h264(out)])
    return out


def slide(k: int, size: tuple[int, int] = (640, 360)) -> Image.Image:
    """A white slide with a title and a few lines of black text, different for every ``k``."""
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    u = size[1] / 360
    font = ImageFont.load_default(size=round(22 * u))
    d.text((30 * u, 20 * u), f"Slide {k + 1}: results of part {chr(65 + k % 26)}", fill="black", font=font)
    for line in range(3):
        words = " ".join(f"item{(k * 7 + line * 3 + j) % 19}" for j in range(3 + (k + line) % 3))
        d.text((50 * u, (90 + 50 * line) * u), f"- {words}", fill=(20, 20, 20), font=font)
    return img


def slides_video(out: Path, n: int, seconds: float, fps: int = 10, size: tuple[int, int] = (640, 360)) -> Path:
    """``n`` static slides, each shown ``seconds``: changes at ``k * seconds``."""
    args: list[str] = []
    for k in range(n):
        png = out.with_name(f"{out.stem}-{k}.png")
        slide(k, size).save(png)
        args += ["-loop", "1", "-framerate", str(fps), "-t", str(seconds), "-i", str(png)]
    graph = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0[out]"
    _run([*args, "-filter_complex", graph, "-map", "[out]", "-r", str(fps), *_h264(out)])
    return out


def long_shot(out: Path, seconds: float, size: str = "320x180", fps: int = 15) -> Path:
    """One continuous moving shot (testsrc2's counter and moving shapes change every frame)."""
    _run(["-f", "lavfi", "-t", str(seconds), "-i", f"testsrc2=size={size}:rate={fps}", *_h264(out)])
    return out
