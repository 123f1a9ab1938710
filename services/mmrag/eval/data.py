"""Queries and relevance judgements (qrels) in JSONL, BEIR/ViDoRe style, and their check against a store.

queries.jsonl, one object a line::

    {"id": "q1", "query": "What does the permutation test assume?", "answer": "exchangeability", "kind": "text"}

``id`` and ``query`` are required; ``answer`` (a reference answer, for ``--answers``) and ``kind`` (any label;
the report breaks the metrics down by it) are optional; other fields are kept and ignored.

qrels.jsonl, one object a line, ``relevance`` an integer >= 0 (0: judged not relevant) and one target::

    {"query_id": "q1", "relevance": 2, "item_id": "3f9c..."}                          # one stored item
    {"query_id": "q1", "relevance": 1, "source": "coin.pdf", "page": 4}               # a page, 1-based
    {"query_id": "q2", "relevance": 1, "source": "cup.mp4", "start_s": 2, "end_s": 5} # a stretch of a video
    {"query_id": "q3", "relevance": 1, "source": "photo.jpg"}                         # a whole document

``source`` names a stored document: its ``source_uri`` exactly, else the one whose basename is ``source``, or whose
URI ends with ``"/" + source`` (``docs/coin.pdf``); more than one such document is an error. Every error names
the file and the line.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Catalog",
    "DocInfo",
    "EvalInputError",
    "Qrel",
    "Query",
    "load_qrels",
    "load_queries",
    "resolve_qrels",
    "source_candidates",
]


class EvalInputError(ValueError):
    """Bad queries or qrels; the message names the file and line and says what to fix."""


@dataclass(frozen=True)
class Query:
    id: str
    query: str
    answer: str | None = None
    kind: str | None = None
    line: int = 0


@dataclass
class Qrel:
    """One relevant (or judged irrelevant) unit of one query: an item, a page, a video stretch or a document."""

    query_id: str
    relevance: int
    item_id: str | None = None
    source: str | None = None
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    where: str = ""  #: "file:line", for error messages
    #: The stored document ``source`` resolved to (set by :func:`resolve_qrels`; ``None`` against a server).
    source_uri: str | None = None
    #: page, clip or image when known (from the target's shape, or from the store for an item id).
    modality: str | None = None

    @property
    def target(self) -> str:
        """What the qrel points at, for reports."""
        if self.item_id is not None:
            return f"item {self.item_id}"
        src = self.source_uri or self.source
        if self.page is not None:
            return f"{src} p.{self.page}"
        if self.start_s is not None:
            return f"{src} {self.start_s:g}-{self.end_s:g}s"
        return str(src)

    def key(self) -> tuple[Any, ...]:
        return (self.query_id, self.item_id, self.source, self.page, self.start_s, self.end_s)


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise EvalInputError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise EvalInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalInputError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise EvalInputError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _str_field(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise EvalInputError(f"{where}: missing field {name!r}")
        return None
    if isinstance(v, int) and not isinstance(v, bool) and name in ("id", "query_id", "item_id"):
        v = str(v)  # BEIR ids are often numbers
    if not isinstance(v, str):
        raise EvalInputError(f"{where}: {name!r} must be a string, got {type(v).__name__}")
    return v


def load_queries(path: str | Path) -> list[Query]:
    """Read queries.jsonl; raises :class:`EvalInputError` naming the line on a bad or duplicate entry."""
    path = Path(path)
    out: list[Query] = []
    seen: dict[str, int] = {}
    for n, obj in _read_jsonl(path):
        where = f"{path}:{n}"
        qid = _str_field(obj, "id", where)
        text = _str_field(obj, "query", where)
        assert qid is not None and text is not None
        if not qid.strip():
            raise EvalInputError(f"{where}: empty query id")
        if not text.strip():
            raise EvalInputError(f"{where}: query {qid!r} is empty")
        if qid in seen:
            raise EvalInputError(f"{where}: duplicate query id {qid!r} (first on line {seen[qid]})")
        seen[qid] = n
        kind = obj.get("kind")
        out.append(
            Query(
                id=qid,
                query=text,
                answer=_str_field(obj, "answer", where, required=False),
                kind=None if kind is None else str(kind),
                line=n,
            )
        )
    if not out:
        raise EvalInputError(f"{path}: no queries")
    return out


def _number(obj: Mapping[str, Any], name: str, where: str) -> float:
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise EvalInputError(f"{where}: {name!r} must be a finite number >= 0, got {v!r}")
    return float(v)


def load_qrels(path: str | Path, queries: Iterable[Query]) -> list[Qrel]:
    """Read qrels.jsonl; every qrel must name a known query and exactly one kind of target."""
    path = Path(path)
    known = {q.id for q in queries}
    out: list[Qrel] = []
    seen: dict[tuple[Any, ...], int] = {}
    for n, obj in _read_jsonl(path):
        where = f"{path}:{n}"
        qid = _str_field(obj, "query_id", where)
        assert qid is not None
        if qid not in known:
            raise EvalInputError(f"{where}: query_id {qid!r} is not in the queries file")
        rel = obj.get("relevance")
        if rel is None:
            raise EvalInputError(f"{where}: missing field 'relevance'")
        if isinstance(rel, float) and rel.is_integer():
            rel = int(rel)
        if isinstance(rel, bool) or not isinstance(rel, int) or rel < 0:
            raise EvalInputError(f"{where}: 'relevance' must be an integer >= 0, got {rel!r}")
        item_id = _str_field(obj, "item_id", where, required=False)
        source = _str_field(obj, "source", where, required=False)
        has_page = obj.get("page") is not None
        has_time = obj.get("start_s") is not None or obj.get("end_s") is not None
        q = Qrel(query_id=qid, relevance=rel, where=where)
        if item_id is not None:
            if source is not None or has_page or has_time:
                raise EvalInputError(f"{where}: give either 'item_id' or 'source' (+ page or start_s/end_s), not both")
            if not item_id:
                raise EvalInputError(f"{where}: empty 'item_id'")
            q.item_id = item_id
        elif source is not None:
            if not source.strip():
                raise EvalInputError(f"{where}: empty 'source'")
            q.source = source
            if has_page and has_time:
                raise EvalInputError(f"{where}: give 'page' or 'start_s'/'end_s', not both")
            if has_page:
                page = obj["page"]
                if isinstance(page, bool) or not isinstance(page, int) or page < 1:
                    raise EvalInputError(f"{where}: 'page' must be an integer >= 1 (pages are 1-based), got {page!r}")
                q.page, q.modality = page, "page"
            elif has_time:
                for name in ("start_s", "end_s"):
                    if obj.get(name) is None:
                        raise EvalInputError(f"{where}: a video target needs both 'start_s' and 'end_s'")
                q.start_s, q.end_s = _number(obj, "start_s", where), _number(obj, "end_s", where)
                if q.end_s < q.start_s:
                    raise EvalInputError(f"{where}: 'end_s' ({q.end_s:g}) is before 'start_s' ({q.start_s:g})")
                q.modality = "clip"
        else:
            raise EvalInputError(f"{where}: missing target: give 'item_id', or 'source' with 'page' or start_s/end_s")
        if q.key() in seen:
            raise EvalInputError(f"{where}: duplicate qrel (same query and target as line {seen[q.key()]})")
        seen[q.key()] = n
        out.append(q)
    return out


# ------------------------------------------------------------------------------------------------ the store
@dataclass
class DocInfo:
    """What the checks need to know about one stored document."""

    source_uri: str
    modalities: set[str] = field(default_factory=set)
    max_page: int | None = None  #: highest page number (items and pages that failed to ingest)
    duration_s: float | None = None  #: end of the last clip


@dataclass
class Catalog:
    """The documents and items of one collection (no vectors, no images)."""

    docs: dict[str, DocInfo]  #: by source_uri
    items: dict[str, tuple[str, str]]  #: item id -> (source_uri, modality)

    @classmethod
    def from_store(cls, store: Any, collection: str) -> Catalog:
        """Read a collection's documents, items and ingest errors from a :class:`mmrag.store.LanceStore`."""
        from lancedb.expr import col, lit

        from mmrag.store import schema as S

        docs = {d["source_uri"]: DocInfo(d["source_uri"]) for d in store.documents(collection)}
        items: dict[str, tuple[str, str]] = {}
        if store.has_items():
            where = ((col("collection") == lit(collection)) & (col("visible") == lit(True))).to_sql()
            rows = (
                store.table(S.ITEMS)
                .search()
                .where(where)
                .select(["id", "source_uri", "modality", "page", "end_s"])
                .limit(None)
                .to_list()
            )
            for r in rows:
                d = docs.setdefault(r["source_uri"], DocInfo(r["source_uri"]))
                d.modalities.add(r["modality"])
                if r["page"] is not None:
                    d.max_page = max(d.max_page or 0, int(r["page"]))
                if r["end_s"] is not None:
                    d.duration_s = max(d.duration_s or 0.0, float(r["end_s"]))
                items[r["id"]] = (r["source_uri"], r["modality"])
        for e in store.errors(collection):
            d = docs.get(e["source_uri"])
            if d is not None and e.get("page") is not None:
                d.max_page = max(d.max_page or 0, int(e["page"]))
        return cls(docs=docs, items=items)


def source_candidates(source: str, uris: Iterable[str]) -> list[str]:
    """The URIs ``source`` may name: an exact match alone if there is one, else every URI whose basename is
    ``source`` or that ends with ``"/" + source``."""
    uris = list(uris)
    if source in uris:
        return [source]
    src = source.replace("\\", "/")
    return [u for u in uris if posixpath.basename(u) == src or u.endswith("/" + src.lstrip("/"))]


def resolve_qrels(qrels: Iterable[Qrel], catalog: Catalog) -> None:
    """Check every qrel against a collection's catalog and set its ``source_uri`` / ``modality`` (in place).

    Errors (naming the qrel's line): an unknown item id, a source that names no stored document or several, a page
    beyond the document's last page or a page of a video, a time range of a document that has no clips.
    """
    uris = list(catalog.docs)
    for q in qrels:
        if q.item_id is not None:
            hit = catalog.items.get(q.item_id)
            if hit is None:
                raise EvalInputError(f"{q.where}: item_id {q.item_id!r} is not in the collection")
            q.source_uri, q.modality = hit
            continue
        assert q.source is not None
        found = source_candidates(q.source, uris)
        if not found:
            raise EvalInputError(
                f"{q.where}: source {q.source!r} names no stored document in the collection "
                f"({len(uris)} documents; ingest it, or give its source URI as ingested)"
            )
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:5]) + (" ..." if len(found) > 5 else "")
            raise EvalInputError(
                f"{q.where}: source {q.source!r} is ambiguous: it names {len(found)} documents ({shown}); "
                "give more of the path"
            )
        doc = catalog.docs[found[0]]
        q.source_uri = doc.source_uri
        if q.page is not None:
            if doc.max_page is None:
                kinds = "/".join(sorted(doc.modalities)) or "no items"
                raise EvalInputError(f"{q.where}: {q.source!r} has no pages ({kinds}); a page target needs a PDF")
            if q.page > doc.max_page:
                raise EvalInputError(
                    f"{q.where}: page {q.page} is outside {q.source!r}, which has {doc.max_page} pages"
                )
        elif q.start_s is not None:
            if "clip" not in doc.modalities:
                raise EvalInputError(f"{q.where}: {q.source!r} is not a video; a start_s/end_s target needs one")
            if doc.duration_s is not None and q.start_s > doc.duration_s:
                raise EvalInputError(
                    f"{q.where}: start_s {q.start_s:g} is after the end of {q.source!r} ({doc.duration_s:g} s)"
                )
        elif q.modality is None and len(doc.modalities) == 1:
            q.modality = next(iter(doc.modalities))
