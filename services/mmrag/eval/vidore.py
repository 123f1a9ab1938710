"""Convert a ViDoRe / BEIR-style dataset folder into mmrag's queries.jsonl + qrels.jsonl.

Two layouts are read (``mmrag eval --import-vidore DIR --out OUT``, or :func:`import_vidore`):

BEIR (ViDoRe v2 and later)
    ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` (``query-id  corpus-id  score``, header line
    optional). ``queries.jsonl`` lines carry ``_id`` (or ``query-id``) and ``text`` (or ``query``), optionally
    ``answer``. Each ``corpus.jsonl`` line (``_id`` or ``corpus-id``) must say where the page lives: a document
    name (the first of ``doc-id``, ``doc_id``, ``source``, ``file_name``, ``image_filename``) and, for a page of a
    PDF, a page number (``page``, ``page_number_in_doc``, ``page_number``). Page numbers are read as 1-based;
    ``page_base=0`` shifts 0-based ones.

One parquet file (ViDoRe v1, HF ``datasets``)
    A ``*.parquet`` file, or a folder of them, with one row per query: ``query``, ``image_filename``, optionally
    ``page``, ``answer``, and ``image`` (``{"bytes": ...}``). A row whose ``image_filename`` is a PDF becomes a
    page qrel (``page`` required); any other row a whole-document qrel on the image file, and its image bytes
    are written to ``OUT/corpus/`` so that ``mmrag ingest OUT/corpus`` stores what the qrels name. Rows without a
    query (corpus-only rows) are skipped.

Every qrel keeps the dataset's grade (``score``; 1 for parquet rows) as ``relevance``; the document name is
reduced to its basename, which :func:`mmrag.eval.data.source_candidates` matches against stored URIs.
"""

from __future__ import annotations

import csv
import json
import posixpath
from pathlib import Path
from typing import Any

from mmrag.eval.data import EvalInputError

__all__ = ["import_vidore"]

_SOURCE_KEYS = ("doc-id", "doc_id", "source", "file_name", "image_filename")
_PAGE_KEYS = ("page", "page_number_in_doc", "page_number")


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise EvalInputError(f"{path}:{n}: malformed JSON ({e.msg})") from e
    return out


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((obj[k] for k in keys if obj.get(k) not in (None, "")), None)


def _page(v: Any, where: str, base: int) -> int:
    try:
        page = int(v) + (1 - base)
    except (TypeError, ValueError) as e:
        raise EvalInputError(f"{where}: page {v!r} is not a number") from e
    if page < 1:
        raise EvalInputError(f"{where}: page {v!r} is below {base} (pages are {base}-based here; see page_base)")
    return page


def _target(source: str, page: Any, where: str, base: int) -> dict[str, Any]:
    name = posixpath.basename(str(source).replace("\\", "/"))
    if page is None or page == "":
        return {"source": name}
    return {"source": name, "page": _page(page, where, base)}


def _beir(folder: Path, page_base: int) -> tuple[list[dict], list[dict]]:
    corpus: dict[str, dict[str, Any]] = {}
    for n, row in _jsonl(folder / "corpus.jsonl"):
        where = f"{folder / 'corpus.jsonl'}:{n}"
        cid = row.get("_id", row.get("corpus-id"))
        src = _first(row, _SOURCE_KEYS)
        if cid is None or src is None:
            raise EvalInputError(
                f"{where}: needs an id (_id or corpus-id) and a document name ({', '.join(_SOURCE_KEYS)})"
            )
        corpus[str(cid)] = _target(src, _first(row, _PAGE_KEYS), where, page_base)
    queries = []
    for n, row in _jsonl(folder / "queries.jsonl"):
        qid, text = row.get("_id", row.get("query-id")), row.get("text", row.get("query"))
        if qid is None or not text:
            raise EvalInputError(f"{folder / 'queries.jsonl'}:{n}: needs _id and text")
        q = {"id": str(qid), "query": text}
        if row.get("answer"):
            q["answer"] = str(row["answer"])
        queries.append(q)
    tsv = folder / "qrels" / "test.tsv"
    if not tsv.exists():
        found = sorted((folder / "qrels").glob("*.tsv"))
        if not found:
            raise EvalInputError(f"{folder}: no qrels/test.tsv")
        tsv = found[0]
    qrels = []
    with tsv.open(encoding="utf-8") as f:
        for n, cells in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not cells or (n == 1 and cells[0] in ("query-id", "query_id")):
                continue
            if len(cells) < 3:
                raise EvalInputError(f"{tsv}:{n}: expected query-id, corpus-id, score")
            qid, cid, score = cells[0], cells[1], cells[2]
            if cid not in corpus:
                raise EvalInputError(f"{tsv}:{n}: corpus-id {cid!r} is not in corpus.jsonl")
            try:
                rel = int(float(score))
            except ValueError as e:
                raise EvalInputError(f"{tsv}:{n}: score {score!r} is not a number") from e
            qrels.append({"query_id": qid, "relevance": rel, **corpus[cid]})
    return queries, qrels


def _parquet(files: list[Path], out: Path, page_base: int) -> tuple[list[dict], list[dict]]:
    import pyarrow.parquet as pq

    queries: list[dict] = []
    qrels: list[dict] = []
    for path in files:
        table = pq.read_table(path)
        missing = {"query", "image_filename"} - set(table.column_names)
        if missing:
            raise EvalInputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for i, row in enumerate(table.to_pylist()):
            if not row.get("query"):
                continue
            where = f"{path} row {i}"
            qid = f"{path.stem}-{i}" if len(files) > 1 else str(i)
            q = {"id": qid, "query": row["query"]}
            if row.get("answer"):
                q["answer"] = str(row["answer"])
            queries.append(q)
            name = str(row["image_filename"])
            if name.lower().endswith(".pdf"):
                if row.get("page") in (None, ""):
                    raise EvalInputError(f"{where}: a PDF image_filename needs a page")
                target = _target(name, row["page"], where, page_base)
            else:
                target = _target(name, None, where, page_base)
                img = row.get("image")
                data = img.get("bytes") if isinstance(img, dict) else None
                if data:
                    dest = out / "corpus" / target["source"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        dest.write_bytes(data)
            qrels.append({"query_id": qid, "relevance": 1, **target})
    return queries, qrels


def import_vidore(src: str | Path, out: str | Path, *, page_base: int = 1) -> dict[str, Any]:
    """Convert ``src`` (a BEIR folder, a parquet file or a folder of parquet files) into ``out/queries.jsonl`` and
    ``out/qrels.jsonl``; returns their paths and counts."""
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and (src / "corpus.jsonl").exists():
        queries, qrels = _beir(src, page_base)
    else:
        files = [src] if src.is_file() else sorted(src.rglob("*.parquet"))
        if not files:
            raise EvalInputError(f"{src}: neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) nor parquet")
        queries, qrels = _parquet(files, out, page_base)
    qp, rp = out / "queries.jsonl", out / "qrels.jsonl"
    qp.write_text("".join(json.dumps(q) + "\n" for q in queries))
    rp.write_text("".join(json.dumps(r) + "\n" for r in qrels))
    corpus = out / "corpus"
    return {
        "queries": str(qp),
        "qrels": str(rp),
        "n_queries": len(queries),
        "n_qrels": len(qrels),
        "corpus": str(corpus) if corpus.exists() else None,
    }
