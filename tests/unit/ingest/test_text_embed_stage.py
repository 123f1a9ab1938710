"""The dense text stage: real all-MiniLM-L6-v2 over the stream rows, columns as the store keeps them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mmrag.config import TextModelConfig
from mmrag.ingest.stages import STREAM_SCHEMA, TextEmbedStage, text_fields_stream

pytestmark = pytest.mark.unit


def test_stage_adds_window_vectors_mean_and_model() -> None:
    rows = [
        {"kind": "item", "text": "gnuplot draws plots of data files " * 20, "context": "gnuplot manual > Plot"},
        {"kind": "item", "text": "", "context": "cup"},  # a silent clip: its context alone
        {"kind": "item", "text": None, "context": None},  # nothing to embed
        {"kind": "end", "text": None, "context": None},
    ]
    batch = pa.Table.from_pylist(rows, schema=STREAM_SCHEMA)
    stage = TextEmbedStage(TextModelConfig(device="cpu", chunk_words=40, chunk_overlap_words=10).model_dump())
    out = stage(batch)
    for f in text_fields_stream(384):
        assert out.schema.field(f.name).type == f.type
    wins = out.column("text_vectors").to_pylist()
    assert len(wins[0]) == len(stage.encoder.chunks(rows[0]["text"])) and len(wins[1]) == 1
    assert wins[2] is None and wins[3] is None
    assert out.column("text_vector")[0].is_valid and not out.column("text_vector")[2].is_valid
    assert out.column("text_model_id").to_pylist()[:3] == [stage.cfg.model, stage.cfg.model, None]


def test_stage_threads_set_the_model_intra_op_threads() -> None:
    """local-cpu gives the text stage both cores' worth of torch threads while it reserves a quarter CPU (it bounds a
    text-heavy ingest); None leaves the process's threads as Ray set them."""
    import torch

    before = torch.get_num_threads()
    try:
        TextEmbedStage(TextModelConfig(device="cpu").model_dump(), threads=None)
        assert torch.get_num_threads() == before
        TextEmbedStage(TextModelConfig(device="cpu").model_dump(), threads=3)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
