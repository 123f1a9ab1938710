"""Shared fixtures. Every test runs with its own MMRAG_HOME and with the model hub offline."""

from __future__ import annotations

import os

import pytest

# Nothing may download weights: fail loudly instead of hanging on an unreachable hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def mmrag_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private state directory for the whole session (tiny models, LanceDB)."""
    home = str(tmp_path_factory.mktemp("mmrag-home"))
    os.environ["MMRAG_HOME"] = home
    return home


@pytest.fixture(autouse=True)
def _clean_mmrag_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config overrides from the developer's shell must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("MMRAG_") and name not in ("MMRAG_HOME", "MMRAG_TORCH_COMPAT"):
            monkeypatch.delenv(name)
