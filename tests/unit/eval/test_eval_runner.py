"""The runner on a fake searcher: runs, unavailable modes, rerank defaults, means, breakdowns, answers, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmrag.eval import check_targets, markdown, parse_runs, run_eval, write_report
from mmrag.eval.data import Qrel, Query
from mmrag.eval.runner import DEFAULT_RUNS, RunSpec, evaluate, evaluate_answers

pytestmark = pytest.mark.unit


def _page(p: int, src: str = "/d/a.pdf") -> dict[str, Any]:
    return {"id": f"{src}#{p}", "doc_id": "d", "source_uri": src, "modality": "page", "page": p, "start_s": None,
            "end_s": None, "score": 1.0 / p, "stage_scores": {}}  # fmt: skip


class FakeSearcher:
    """Ranks pages by a table of (query, mode, rerank) -> page numbers; knows no ``dense`` mode."""

    def __init__(self, table: dict[tuple[str, str | None, bool], list[int]]) -> None:
        self.table = table
        self.calls: list[tuple[str, str | None, Any]] = []

    def search(self, query: str, *, k: int = 10, collection: str | None = None, mode: str | None = None,
               rerank: bool = True) -> list[dict[str, Any]]:  # fmt: skip
        self.calls.append((query, mode, rerank))
        if mode == "dense":
            raise ValueError("unknown search mode 'dense'; use visual, text or hybrid")
        if query == "boom":
            raise RuntimeError("the index fell over")
        return [_page(p) for p in self.table.get((query, mode or "hybrid", rerank), [])][:k]


class NoneAwareSearcher(FakeSearcher):
    def search(self, query: str, *, k: int = 10, collection: str | None = None, mode: str | None = None,
               rerank: bool | None = None) -> list[dict[str, Any]]:  # fmt: skip
        return super().search(query, k=k, collection=collection, mode=mode, rerank=rerank)  # type: ignore[arg-type]


QUERIES = [Query("q1", "alpha", kind="text"), Query("q2", "beta", kind="chart"), Query("q3", "unjudged")]
QRELS = [
    Qrel("q1", 2, source="a.pdf", page=1, source_uri="/d/a.pdf", modality="page"),
    Qrel("q1", 1, source="a.pdf", page=2, source_uri="/d/a.pdf", modality="page"),
    Qrel("q2", 1, source="a.pdf", page=3, source_uri="/d/a.pdf", modality="page"),
]


def test_parse_runs() -> None:
    assert parse_runs(None) == list(DEFAULT_RUNS) and parse_runs("all") == list(DEFAULT_RUNS)
    assert [r.name for r in parse_runs("bm25,default")] == ["bm25", "default"]
    assert parse_runs("mine=hybrid:false,x=visual") == [RunSpec("mine", "hybrid", False), RunSpec("x", "visual", None)]
    for bad in ("nope", "x=hybrid:maybe", "=hybrid", "bm25,bm25"):
        with pytest.raises(ValueError):
            parse_runs(bad)


def test_evaluate_with_a_fake_searcher() -> None:
    table = {
        ("alpha", "text", False): [2, 1, 9],  # both relevant pages, the lesser first
        ("alpha", "hybrid", False): [1, 2],
        ("alpha", "hybrid", True): [1, 1, 2],  # a duplicate of page 1 in between
        ("beta", "text", False): [5, 6, 7, 8, 9, 3],  # found at rank 6
        ("beta", "hybrid", False): [3],
        ("beta", "hybrid", True): [3],
    }
    fake = FakeSearcher(table)
    runs = parse_runs("bm25,dense,fused,fused+rerank,default")
    rep = evaluate(QUERIES, QRELS, fake, runs, k=10)
    by = {r["name"]: r for r in rep["runs"]}
    assert by["dense"]["available"] is False and "unknown search mode" in by["dense"]["unavailable"]
    assert rep["excluded"] == [{"id": "q3", "reason": "no qrels"}]
    assert any("q3" in w for w in rep["warnings"]) and any("dense" in w for w in rep["warnings"])
    # bm25, q1: gains [1, 2, 0]: DCG = 1 + 2/log2(3) = 2.26186; IDCG = 2 + 1/log2(3) = 2.63093 -> 0.85972
    q1 = rep["queries"][0]["runs"]
    assert q1["bm25"]["ndcg@5"] == pytest.approx(0.8597, abs=1e-4)
    assert q1["bm25"]["recall@5"] == 1.0 and q1["bm25"]["mrr@10"] == 1.0
    assert q1["fused"]["ndcg@5"] == 1.0
    # fused+rerank: [1, 1, 2] -> gains [2, 0, 1]: (2 + 1/2) / 2.63093 = 0.95023, and one duplicate
    assert q1["fused+rerank"]["ndcg@5"] == pytest.approx(0.9502, abs=1e-4) and q1["fused+rerank"]["duplicates"] == 1
    q2 = rep["queries"][1]["runs"]["bm25"]
    assert q2["ndcg@5"] == 0.0 and q2["recall@10"] == 1.0 and q2["mrr@10"] == pytest.approx(1 / 6, abs=1e-4)
    assert [h[2] for h in q2["hits"]] == [0, 0, 0, 0, 0, 1.0] and q2["hits"][-1][0] == "/d/a.pdf#3"
    assert rep["items"]["/d/a.pdf#3"] == {"source": "/d/a.pdf", "modality": "page", "page": 3}
    assert by["bm25"]["means"]["ndcg@5"] == pytest.approx(0.8597 / 2, abs=1e-4) and by["bm25"]["means"]["n"] == 2
    assert by["bm25"]["latency_ms"]["n"] == 2 and by["bm25"]["errors"] == 0
    assert set(by["fused"]["by_kind"]) == {"text", "chart"} and set(by["fused"]["by_modality"]) == {"page"}
    # default run: rerank=None is not passed to a searcher whose rerank is a plain bool: its default applies
    assert ("alpha", None, True) in fake.calls
    assert by["default"]["means"]["ndcg@5"] == by["fused+rerank"]["means"]["ndcg@5"]
    # one warm-up per available run + 2 queries x 4 available runs; dense tried once
    assert len(fake.calls) == 5 + 2 * 4


def test_rerank_none_passed_when_the_searcher_accepts_it() -> None:
    fake = NoneAwareSearcher({})
    evaluate(QUERIES[:1], QRELS[:1], fake, [RunSpec("default", None, None)])
    assert fake.calls and all(c == ("alpha", None, None) for c in fake.calls)


def test_a_failed_search_scores_zero_and_is_reported() -> None:
    qs = [Query("q1", "boom")]
    # the warm-up uses the first query: a searcher failing on it with a real error stops the evaluation
    with pytest.raises(RuntimeError, match="fell over"):
        evaluate(qs, QRELS[:1], FakeSearcher({}), [RunSpec("x", "text", False)])
    qs = [Query("q1", "alpha"), Query("q2", "boom")]
    qrels = [QRELS[0], Qrel("q2", 1, source="a.pdf", page=3, source_uri="/d/a.pdf", modality="page")]
    rep = evaluate(qs, qrels, FakeSearcher({("alpha", "text", False): [1]}), [RunSpec("x", "text", False)])
    run = rep["runs"][0]
    assert run["errors"] == 1 and run["means"]["n"] == 2
    assert "fell over" in rep["queries"][1]["runs"]["x"]["error"] and rep["queries"][1]["runs"]["x"]["ndcg@5"] == 0


def test_targets_and_markdown() -> None:
    def run(name: str, ndcg: float | None) -> dict[str, Any]:
        if ndcg is None:
            return {"name": name, "setting": "", "available": False}
        means = {"ndcg@5": ndcg, "ndcg@10": ndcg, "recall@5": 1.0, "recall@10": 1.0, "mrr@10": 1.0, "n": 2}
        return {"name": name, "setting": "s", "available": True, "errors": 0, "latency_ms": {"p50": 1.0, "p95": 2.0},
                "means": means}  # fmt: skip

    rep = {"runs": [run("visual", 0.30), run("bm25", 0.50), run("dense", None), run("fused", 0.495),
                    run("fused+rerank", 0.48), run("default", 0.56)], "counts": {}, "k": 10}  # fmt: skip
    t = check_targets(rep)
    assert [x["status"] for x in t] == ["MET", "MET", "MISSED"]
    assert t[1]["numbers"]["best"] == "bm25" and "dense" not in t[1]["numbers"]
    rep["targets"] = t
    md = markdown(rep)
    assert "| bm25 |" in md and "**MISSED** fused+rerank" in md and "unavailable" in md
    rep["runs"][-1]["means"]["ndcg@5"] = 0.54
    assert check_targets(rep)[0]["status"] == "MISSED"
    assert check_targets({"runs": []})[0]["status"] == "N/A"


def test_answers_cited_precision_and_f1() -> None:
    qs = [Query("q1", "alpha", answer="The page one"), Query("q2", "beta")]
    answers = {
        "alpha": {"answer": "page one [1]", "citations": [
            {"n": 1, "cited": True, "id": "x", "source": "/d/a.pdf", "modality": "page", "page": 1},
            {"n": 2, "cited": True, "id": "y", "source": "/d/a.pdf", "modality": "page", "page": 7},
            {"n": 3, "cited": False, "id": "z", "source": "/d/a.pdf", "modality": "page", "page": 2},
        ], "timings": {"total": 12.0}},
        "beta": {"answer": "nothing", "citations": [
            {"n": 1, "cited": False, "id": "w", "source": "/d/a.pdf", "modality": "page", "page": 3}]},
    }  # fmt: skip

    def ask(url: str, query: str, **kw: Any) -> dict[str, Any]:
        assert kw["stream"] is False
        return answers[query]

    out = evaluate_answers(qs, QRELS, "http://x", ask=ask)
    rows = {r["id"]: r for r in out["queries"]}
    assert rows["q1"]["cited_precision"] == 0.5 and rows["q1"]["cited_relevant"] == [1]
    assert rows["q1"]["sources_relevant"] == 2 and rows["q1"]["token_f1"] == 1.0
    assert rows["q2"]["cited_precision"] is None and rows["q2"]["token_f1"] is None
    s = out["summary"]
    assert s["cited_precision"] == 0.5 and s["answers_citing_relevant"] == 0.5 and s["answers_citing_anything"] == 0.5
    assert s["token_f1"] == 1.0 and s["with_reference"] == 1 and s["latency_ms"]["n"] == 1


def test_run_eval_end_to_end_with_files(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q1", "query": "alpha"}) + "\n")
    (tmp_path / "r.jsonl").write_text(json.dumps({"query_id": "q1", "relevance": 1, "source": "a.pdf", "page": 1}))
    fake = FakeSearcher({("alpha", "text", False): [1]})
    rep = run_eval(tmp_path / "q.jsonl", tmp_path / "r.jsonl", url="http://server", searcher=fake,
                   runs=parse_runs("bm25"), argv=["--runs", "bm25"])  # fmt: skip
    assert rep["mode"] == "server" and rep["environment"]["command"] == "mmrag eval --runs bm25"
    assert rep["runs"][0]["means"]["ndcg@5"] == 1.0  # matched by basename against the hit's source URI
    rep["warnings"].append('a "quoted", [bracketed] warning')
    md = write_report(rep, tmp_path / "out" / "eval.json")
    text = (tmp_path / "out" / "eval.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(rep, default=str))
    assert '["/d/a.pdf#1", 1.0, 1.0]' in text  # a hit on one line
    assert md.read_text().startswith("# Retrieval quality")
