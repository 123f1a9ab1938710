"""The retriever's attention implementation: flash_attention_2 only where it can load, else a working fallback."""

from __future__ import annotations

import importlib.util

import pytest

from mmrag.models.encoder import usable_attention

pytestmark = pytest.mark.unit


def test_flash_attention_falls_back_where_it_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "flash_attn" else real(n, *a))
    assert usable_attention("flash_attention_2", "cuda") == "sdpa"  # the gpu extra ships no flash_attn
    assert usable_attention("flash_attention_2", "cpu") == "eager"
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "flash_attn" else real(n, *a))
    assert usable_attention("flash_attention_2", "cuda") == "flash_attention_2"
    assert usable_attention("flash_attention_2", "cpu") == "eager"  # flash_attn is CUDA-only


def test_other_choices_are_kept() -> None:
    assert usable_attention("sdpa", "cuda") == "sdpa"
    assert usable_attention("eager", "cpu") == "eager"
    assert usable_attention("sdpa", "cpu") == "sdpa"  # asked for explicitly
