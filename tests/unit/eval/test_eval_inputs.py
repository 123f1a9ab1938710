"""queries.jsonl and qrels.jsonl: parsing, and each kind of bad input named with its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrag.eval.data import Catalog, DocInfo, EvalInputError, load_qrels, load_queries, resolve_qrels

pytestmark = pytest.mark.unit


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "queries.jsonl",
        [
            {"id": "q1", "query": "what is coin", "answer": "an R package", "kind": "text"},
            "",
            {"id": 2, "query": "the cup video", "extra": 1},
        ],
    )


def test_queries_parse(queries: Path) -> None:
    qs = load_queries(queries)
    assert [q.id for q in qs] == ["q1", "2"]
    assert qs[0].answer == "an R package" and qs[0].kind == "text" and qs[1].line == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "malformed JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"query": "x"}', "missing field 'id'"),
        ('{"id": "q9"}', "missing field 'query'"),
        ('{"id": "q9", "query": "   "}', "is empty"),
        ('{"id": "q1", "query": "again"}', "duplicate query id 'q1' \\(first on line 1\\)"),
        ('{"id": "q9", "query": 5}', "'query' must be a string"),
    ],
)
def test_bad_queries_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    p = _write(tmp_path / "q.jsonl", [{"id": "q1", "query": "ok"}, line])
    with pytest.raises(EvalInputError, match=rf"q\.jsonl:2: .*{message}"):
        load_queries(p)


def test_empty_queries_file(tmp_path: Path) -> None:
    with pytest.raises(EvalInputError, match="no queries"):
        load_queries(_write(tmp_path / "q.jsonl", [""]))
    with pytest.raises(EvalInputError, match="cannot read"):
        load_queries(tmp_path / "missing.jsonl")


def test_qrels_parse(queries: Path, tmp_path: Path) -> None:
    qs = load_queries(queries)
    r = _write(
        tmp_path / "qrels.jsonl",
        [
            {"query_id": "q1", "relevance": 2, "source": "coin.pdf", "page": 3},
            {"query_id": "q1", "relevance": 1, "item_id": "abc"},
            {"query_id": "2", "relevance": 1, "source": "cup.mp4", "start_s": 1, "end_s": 2.5},
            {"query_id": "2", "relevance": 0, "source": "photo.jpg"},
        ],
    )
    got = load_qrels(r, qs)
    assert [(q.query_id, q.relevance, q.modality) for q in got] == [
        ("q1", 2, "page"), ("q1", 1, None), ("2", 1, "clip"), ("2", 0, None),
    ]  # fmt: skip
    assert got[2].start_s == 1.0 and got[2].end_s == 2.5 and got[0].where.endswith("qrels.jsonl:1")
    assert got[0].target == "coin.pdf p.3" and got[2].target == "cup.mp4 1-2.5s"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"relevance": 1, "item_id": "a"}, "missing field 'query_id'"),
        ({"query_id": "nope", "relevance": 1, "item_id": "a"}, "query_id 'nope' is not in the queries file"),
        ({"query_id": "q1", "item_id": "a"}, "missing field 'relevance'"),
        ({"query_id": "q1", "relevance": -1, "item_id": "a"}, "integer >= 0"),
        ({"query_id": "q1", "relevance": "high", "item_id": "a"}, "integer >= 0"),
        ({"query_id": "q1", "relevance": 1}, "missing target"),
        ({"query_id": "q1", "relevance": 1, "item_id": "a", "page": 2}, "not both"),
        ({"query_id": "q1", "relevance": 1, "source": "a.pdf", "page": 0}, "1-based"),
        ({"query_id": "q1", "relevance": 1, "source": "a.pdf", "page": 2, "start_s": 1, "end_s": 2}, "not both"),
        ({"query_id": "q1", "relevance": 1, "source": "v.mp4", "start_s": 1}, "both 'start_s' and 'end_s'"),
        ({"query_id": "q1", "relevance": 1, "source": "v.mp4", "start_s": 3, "end_s": 2}, "before 'start_s'"),
        ({"query_id": "q1", "relevance": 1, "source": "v.mp4", "start_s": -1, "end_s": 2}, "finite number >= 0"),
        ({"query_id": "q1", "relevance": 1, "source": ""}, "empty 'source'"),
        ({"query_id": "q1", "relevance": 1, "source": "coin.pdf", "page": 3}, "duplicate qrel .*line 1"),
    ],
)
def test_bad_qrels_name_the_line(queries: Path, tmp_path: Path, obj: dict, message: str) -> None:
    r = _write(tmp_path / "qrels.jsonl", [{"query_id": "q1", "relevance": 1, "source": "coin.pdf", "page": 3}, obj])
    with pytest.raises(EvalInputError, match=rf"qrels\.jsonl:2: .*{message}"):
        load_qrels(r, load_queries(queries))


def _catalog() -> Catalog:
    docs = {
        "/data/a/coin.pdf": DocInfo("/data/a/coin.pdf", {"page"}, max_page=10),
        "/data/b/coin.pdf": DocInfo("/data/b/coin.pdf", {"page"}, max_page=4),
        "/data/cup.mp4": DocInfo("/data/cup.mp4", {"clip"}, duration_s=8.0),
        "s3://bucket/photo.jpg": DocInfo("s3://bucket/photo.jpg", {"image"}),
    }
    return Catalog(docs=docs, items={"item1": ("/data/cup.mp4", "clip")})


def _resolve(queries: Path, tmp_path: Path, *objs: dict) -> list:
    r = _write(tmp_path / "qrels.jsonl", list(objs))
    qrels = load_qrels(r, load_queries(queries))
    resolve_qrels(qrels, _catalog())
    return qrels


def test_resolve_sources(queries: Path, tmp_path: Path) -> None:
    got = _resolve(
        queries,
        tmp_path,
        {"query_id": "q1", "relevance": 1, "source": "a/coin.pdf", "page": 10},
        {"query_id": "q1", "relevance": 1, "source": "/data/b/coin.pdf", "page": 1},
        {"query_id": "q1", "relevance": 1, "source": "photo.jpg"},
        {"query_id": "2", "relevance": 1, "item_id": "item1"},
        {"query_id": "2", "relevance": 1, "source": "cup.mp4", "start_s": 7, "end_s": 9},
    )
    assert [q.source_uri for q in got] == [
        "/data/a/coin.pdf", "/data/b/coin.pdf", "s3://bucket/photo.jpg", "/data/cup.mp4", "/data/cup.mp4",
    ]  # fmt: skip
    assert [q.modality for q in got] == ["page", "page", "image", "clip", "clip"]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"query_id": "q1", "relevance": 1, "source": "coin.pdf", "page": 1}, "ambiguous: it names 2 documents"),
        ({"query_id": "q1", "relevance": 1, "source": "other.pdf", "page": 1}, "names no stored document"),
        ({"query_id": "q1", "relevance": 1, "source": "oin.pdf", "page": 1}, "names no stored document"),
        ({"query_id": "q1", "relevance": 1, "source": "b/coin.pdf", "page": 5}, "page 5 is outside .* 4 pages"),
        ({"query_id": "q1", "relevance": 1, "source": "cup.mp4", "page": 1}, "has no pages"),
        ({"query_id": "q1", "relevance": 1, "source": "photo.jpg", "start_s": 0, "end_s": 1}, "not a video"),
        ({"query_id": "q1", "relevance": 1, "source": "cup.mp4", "start_s": 9, "end_s": 10}, "after the end"),
        ({"query_id": "q1", "relevance": 1, "item_id": "nope"}, "item_id 'nope' is not in the collection"),
    ],
)
def test_resolve_errors_name_the_line(queries: Path, tmp_path: Path, obj: dict, message: str) -> None:
    ok = {"query_id": "q1", "relevance": 1, "source": "a/coin.pdf", "page": 1}
    with pytest.raises(EvalInputError, match=rf"qrels\.jsonl:2: .*{message}"):
        _resolve(queries, tmp_path, ok, obj)
