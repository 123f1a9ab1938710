"""Model fixtures: the tiny checkpoints (built once per session) and a ColPaliEncoder over the tiny retriever."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw


@pytest.fixture(scope="session")
def tiny_dir(mmrag_home: str) -> Path:
    """``$MMRAG_HOME/models/tiny`` with both tiny checkpoints built (the default ``models.tiny_dir``)."""
    from mmrag.models.tiny import build_tiny

    out = Path(mmrag_home) / "models" / "tiny"
    build_tiny(out)
    return out


@pytest.fixture(scope="session")
def tiny_encoder(tiny_dir: Path):
    """A ColPaliEncoder loaded through the config tree, as the retriever deployment loads it."""
    from mmrag.config import ModelsConfig
    from mmrag.models.encoder import ColPaliEncoder

    return ColPaliEncoder.from_config(ModelsConfig(tiny_dir=str(tiny_dir)))


@pytest.fixture(scope="session")
def page_images() -> list[Image.Image]:
    """Two small same-size pages: one with lines of text, one with a bar chart."""
    text_page = Image.new("RGB", (224, 280), "white")
    draw = ImageDraw.Draw(text_page)
    for i, line in enumerate(["Quarterly report", "Revenue grew by 12%", "Costs fell by 3%", "Outlook: stable"]):
        draw.text((12, 16 + 28 * i), line, fill="black")

    chart_page = Image.new("RGB", (224, 280), "white")
    draw = ImageDraw.Draw(chart_page)
    draw.line((20, 250, 210, 250), fill="black", width=2)
    draw.line((20, 250, 20, 30), fill="black", width=2)
    for i, (h, color) in enumerate([(80, "red"), (150, "green"), (120, "blue"), (200, "orange")]):
        draw.rectangle((35 + 42 * i, 250 - h, 65 + 42 * i, 249), fill=color)
    draw.text((60, 10), "Sales by year", fill="black")
    return [text_page, chart_page]


@pytest.fixture(scope="session")
def smollm2_dir(mmrag_home: str) -> Path:
    """SmolLM2-135M-Instruct converted from its package once per session, where local-cpu's ``models.real_dir``
    puts it (``$MMRAG_HOME/models/real``), so later tests and the integration tests reuse it."""
    from mmrag.config import REAL_GENERATOR
    from mmrag.models.smollm2 import build_smollm2

    return build_smollm2(Path(mmrag_home) / "models" / "real" / REAL_GENERATOR)
