"""BM25 over items' text with LanceDB's full-text index.

The user's words are passed as a :class:`lancedb.query.MatchQuery` (no query-syntax parsing, so quotes,
parentheses or ``AND OR NOT`` cannot make it raise); the filters are a typed prefilter.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from mmrag.store.filters import SearchFilters

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_terms(query: str, max_terms: int = 64) -> list[str]:
    """The distinct words of ``query`` (NFKC, lower-cased) in order, at most ``max_terms``: BM25's input.

    Only word characters survive, so no query syntax (quotes, parentheses, ``field:``, ``*``, ``~``, ``^``)
    ever reaches LanceDB; ``AND OR NOT`` are ordinary (stop) words.
    """
    if not isinstance(query, str):
        return []
    seen: dict[str, None] = {}
    for w in _WORD.findall(unicodedata.normalize("NFKC", query[: 64 * max_terms]).lower()):
        if w.replace("_", "") and len(w) <= 40:
            seen.setdefault(w, None)
            if len(seen) >= max_terms:
                break
    return list(seen)


def bm25(table: Any, query: str, k: int, filters: SearchFilters, columns: list[str], max_terms: int) -> list[dict]:
    """Rows (``columns`` plus ``_score``) of the top ``k`` BM25 matches of ``query`` that pass ``filters``."""
    from lancedb.query import MatchQuery

    terms = fts_terms(query, max_terms)
    if not terms:
        return []
    res = (
        table.search(MatchQuery(" ".join(terms), "text"), query_type="fts")
        .where(filters.to_sql(), prefilter=True)
        .select([*columns, "_score"])  # named, or LanceDB warns on every search that it added it
        .limit(k)
        .to_arrow()
    )
    return res.to_pylist()


__all__ = ["bm25", "fts_terms"]
