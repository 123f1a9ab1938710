"""Rerankers: re-score a query's candidates. One protocol, one class per implementation.

* :class:`MaxSimReranker` — exact late-interaction MaxSim on the candidates' full-precision
  multivectors (fetched from the store), batched in torch. The default.
* :class:`CrossEncoderReranker` — a text cross-encoder (transformers sequence classification, e.g.
  ``cross-encoder/ms-marco-MiniLM-L-6-v2``) over the query and each candidate's text.

Both take the same inputs (the query text, its multivector if it was encoded, candidate dicts with
at least ``id`` and ``text``) and return one score per candidate, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

FetchMultivectors = Callable[[Sequence[str]], dict[str, np.ndarray]]


class Reranker(Protocol):
    """What the reranker deployment calls."""

    name: str
    needs_query_vectors: bool

    def score(self, query: str, query_mv: np.ndarray | None, candidates: Sequence[dict[str, Any]]) -> np.ndarray: ...


def maxsim_torch(query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    """Exact MaxSim of one query against variable-length docs in one padded, masked batch."""
    import torch

    if not docs:
        return np.zeros(0, dtype=np.float32)
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    lengths = [d.shape[0] for d in docs]
    padded = torch.zeros(len(docs), max(lengths), q.shape[1])
    for i, d in enumerate(docs):
        padded[i, : d.shape[0]] = torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    with torch.inference_mode():
        sim = torch.einsum("qd,ntd->nqt", q, padded)
        sim.masked_fill_(~mask[:, None, :], float("-inf"))  # padding never wins, unlike zero padding
        return sim.max(dim=2).values.sum(dim=1).numpy()


class MaxSimReranker:
    """Exact MaxSim on full-precision multivectors fetched for the candidates only."""

    name = "maxsim"
    needs_query_vectors = True

    def __init__(self, fetch: FetchMultivectors) -> None:
        self.fetch = fetch

    def score(self, query: str, query_mv: np.ndarray | None, candidates: Sequence[dict[str, Any]]) -> np.ndarray:
        if query_mv is None:
            raise ValueError("the maxsim reranker needs the query's multivector")
        out = np.full(len(candidates), -np.inf, dtype=np.float32)
        # The retriever's last visual stage is this same exact float32 MaxSim: reuse its scores.
        todo = []
        for i, c in enumerate(candidates):
            known = exact_maxsim(c)
            if known is None:
                todo.append(i)
            else:
                out[i] = known
        if not todo:
            return out
        mvs = self.fetch([candidates[i]["id"] for i in todo])
        present = [i for i in todo if candidates[i]["id"] in mvs]
        if present:
            out[present] = maxsim_torch(query_mv, [mvs[candidates[i]["id"]] for i in present])
        return out


def exact_maxsim(candidate: dict[str, Any]) -> float | None:
    """The exact MaxSim the retriever computed for ``candidate`` (stage score ``maxsim``), if it did."""
    v = (candidate.get("stage_scores") or {}).get("maxsim")
    return float(v) if v is not None and np.isfinite(v) else None


class CrossEncoderReranker:
    """A text cross-encoder over (query, candidate text); candidates without text score lowest."""

    name = "text-cross-encoder"
    needs_query_vectors = False

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32, max_length: int = 512) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, ref: str, *, revision: str | None = None, device: str = "cpu") -> CrossEncoderReranker:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ref, revision=revision)
        model = AutoModelForSequenceClassification.from_pretrained(ref, revision=revision).to(device).eval()
        return cls(model, tok)

    def score(self, query: str, query_mv: np.ndarray | None, candidates: Sequence[dict[str, Any]]) -> np.ndarray:
        import torch

        out = np.full(len(candidates), -np.inf, dtype=np.float32)
        idx = [i for i, c in enumerate(candidates) if (c.get("text") or "").strip()]
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start : start + self.batch_size]
            enc = self.tokenizer(
                [query] * len(chunk),
                [candidates[i]["text"] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits
            vals = logits[:, 0] if logits.shape[-1] == 1 else logits.softmax(-1)[:, -1]
            out[chunk] = vals.float().cpu().numpy()
        return out
