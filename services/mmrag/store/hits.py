"""A search result: what a client needs to cite it, and the score each stage gave it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One search result with what a client needs to cite it."""

    id: str
    score: float
    modality: str
    collection: str
    doc_id: str
    source_uri: str
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    text: str = ""
    #: Score of this item at each stage that saw it: ``pooled``, ``tokens``, ``maxsim``, ``bm25``, ``dense``,
    #: ``fused``.
    stage_scores: dict[str, float] = field(default_factory=dict)
    #: The channels that can rank this item at all (``visual``, ``bm25``, ``dense``); empty: unknown (all).
    channels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "modality": self.modality,
            "collection": self.collection,
            "doc_id": self.doc_id,
            "source_uri": self.source_uri,
            "page": self.page,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "text": self.text,
            "stage_scores": dict(self.stage_scores),
            "channels": list(self.channels),
        }


__all__ = ["Hit"]
