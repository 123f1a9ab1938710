"""Which retrieved hits are relevant: the matching rules between a hit and a qrel.

A hit (``id, source_uri`` (or ``source``, as the HTTP API names it), ``modality, page, start_s, end_s``) matches
a qrel when

* the qrel names the hit's ``item_id``; or
* the qrel names the hit's document (``source``, see :func:`mmrag.eval.data.source_candidates`) and
  - its ``page`` equals the hit's page; or
  - its time range ``[start_s, end_s]`` overlaps the hit's clip by at least ``min(1 s, half the shorter of the
    two spans)``: a clip sharing 0.3 s of a 0.5 s qrel range matches (more than half of it), a clip sharing
    0.3 s of a 10 s range does not, and a point (``start_s == end_s``) matches the clips that contain it;
  - it gives neither (a whole document, e.g. an image): any item of the document.

No double credit: hits are judged best first, and each qrel is credited to the first hit that matches it; a hit
matching several uncredited qrels takes the highest grade. Later hits that match only credited qrels (two
overlapping clips of one relevant scene, say) gain 0. Qrels of relevance 0 never give credit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmrag.eval.data import EvalInputError, Qrel, source_candidates

__all__ = ["MIN_OVERLAP_S", "Judge", "Judged", "overlaps", "qrel_matches"]

#: A clip and a qrel's time range match when they share this many seconds (or half the shorter span, if less).
MIN_OVERLAP_S = 1.0


def hit_source(hit: Mapping[str, Any]) -> str | None:
    return hit.get("source_uri") or hit.get("source")


def overlaps(a_start: float, a_end: float, b_start: float, b_end: float) -> bool:
    """The overlap rule: the spans intersect by at least ``min(MIN_OVERLAP_S, 0.5 * shorter span)``."""
    shared = min(a_end, b_end) - max(a_start, b_start)
    if shared < 0:
        return False
    return shared >= min(MIN_OVERLAP_S, 0.5 * min(a_end - a_start, b_end - b_start))


def _same_document(q: Qrel, uri: str | None) -> bool:
    if uri is None:
        return False
    if q.source_uri is not None:
        return uri == q.source_uri
    return q.source is not None and bool(source_candidates(q.source, [uri]))


def qrel_matches(q: Qrel, hit: Mapping[str, Any]) -> bool:
    """Whether ``hit`` is the unit ``q`` names (see the module docstring)."""
    if q.item_id is not None:
        return hit.get("id") == q.item_id
    if not _same_document(q, hit_source(hit)):
        return False
    if q.page is not None:
        return hit.get("page") == q.page
    if q.start_s is not None:
        hs, he = hit.get("start_s"), hit.get("end_s")
        if hs is None or he is None:
            return False
        assert q.end_s is not None
        return overlaps(float(hs), float(he), q.start_s, q.end_s)
    return True


@dataclass
class Judged:
    """A ranking judged against one query's qrels."""

    gains: list[float]  #: credited grade per rank
    matched: list[str | None]  #: the qrel target each hit was credited with (None: no credit)
    duplicates: int = 0  #: hits that matched only qrels an earlier hit had found


@dataclass
class Judge:
    """Judges rankings against qrels. Against a server (qrels not resolved on a store) it also checks that each
    qrel's ``source`` names one document only, across everything it has seen."""

    qrels: Mapping[str, Sequence[Qrel]]  #: by query id
    _seen_uris: dict[int, str] = field(default_factory=dict)

    def _check_ambiguity(self, q: Qrel, hit: Mapping[str, Any]) -> None:
        if q.source_uri is not None or q.source is None:
            return
        uri = hit_source(hit)
        first = self._seen_uris.setdefault(id(q), uri or "")
        if uri and uri != first:
            raise EvalInputError(
                f"{q.where}: source {q.source!r} is ambiguous: it names at least two documents ({first}, {uri}); "
                "give more of the path"
            )

    def judge(self, query_id: str, hits: Sequence[Mapping[str, Any]]) -> Judged:
        credited: set[int] = set()
        gains: list[float] = []
        matched: list[str | None] = []
        duplicates = 0
        qrels = list(self.qrels.get(query_id, ()))
        for hit in hits:
            best: int | None = None
            any_match = False
            for i, q in enumerate(qrels):
                if not qrel_matches(q, hit):
                    continue
                self._check_ambiguity(q, hit)
                if q.relevance <= 0:
                    continue
                any_match = True
                if i not in credited and (best is None or q.relevance > qrels[best].relevance):
                    best = i
            if best is None:
                gains.append(0.0)
                matched.append(None)
                duplicates += any_match
            else:
                credited.add(best)
                gains.append(float(qrels[best].relevance))
                matched.append(qrels[best].target)
        return Judged(gains=gains, matched=matched, duplicates=duplicates)

    def relevant(self, query_id: str, hit: Mapping[str, Any]) -> bool:
        """Whether ``hit`` matches any positive qrel of the query (no credit bookkeeping: for citations)."""
        return any(q.relevance > 0 and qrel_matches(q, hit) for q in self.qrels.get(query_id, ()))
