"""Fixtures for the decoding layer: the real files in tests/data and hostile files built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="session")
def coin_pdf() -> Path:
    """coin.pdf: 11 real pages of text, tables and equations (GPL-2, see tests/data/README.md)."""
    return DATA / "coin.pdf"


@pytest.fixture(scope="session")
def cup_mp4() -> Path:
    """cup.mp4: 8.1 s of 640x480 H.264 with audio, 217 frames (OpenCV samples, Apache-2.0/BSD)."""
    return DATA / "cup.mp4"


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Write bytes to a file in the test's temp dir and return its path."""

    def _write(name: str, data: bytes) -> Path:
        p = tmp_path / name
        p.write_bytes(data)
        return p

    return _write
