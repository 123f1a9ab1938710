"""`mmrag eval` on the command line, the HTTP searcher on a mock transport, and the ViDoRe importer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmrag.cli.main import app
from mmrag.eval import load_qrels, load_queries
from mmrag.eval.data import EvalInputError
from mmrag.eval.runner import HttpSearcher
from mmrag.eval.vidore import import_vidore

pytestmark = pytest.mark.unit
runner = CliRunner()


def test_eval_cli_names_the_bad_line(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text('{"id": "a", "query": "x"}\n{"id": "a", "query": "y"}\n')
    (tmp_path / "r.jsonl").write_text("")
    res = runner.invoke(
        app, ["eval", "--queries", str(tmp_path / "q.jsonl"), "--qrels", str(tmp_path / "r.jsonl"),
              "--db", str(tmp_path / "db")],
    )  # fmt: skip
    assert res.exit_code == 2
    # rich wraps the message at the terminal width, where the temporary path's length puts it (a space or not)
    flat = " ".join(res.output.split())
    assert "q.jsonl:2: duplicate query id 'a'" in flat or "q.jsonl:2:duplicate query id 'a'" in flat


def test_eval_cli_argument_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval"])
    assert res.exit_code == 2 and "--queries" in res.output
    res = runner.invoke(app, ["eval", "--queries", "q", "--qrels", "r", "--answers"])
    assert res.exit_code == 2 and "--url" in res.output
    res = runner.invoke(app, ["eval", "--queries", "q", "--qrels", "r", "--runs", "nope"])
    assert res.exit_code == 2 and "unknown run 'nope'" in res.output


def test_http_searcher_shapes_and_unknown_mode() -> None:
    seen: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        seen.append(body)
        if body.get("mode") == "dense":
            msg = "mode: Input should be 'visual', 'text' or 'hybrid'"
            return httpx.Response(400, json={"error": {"code": "invalid_request", "field": "mode", "message": msg}})
        hit = {"id": "i1", "score": 0.5, "modality": "page", "source": "/d/a.pdf", "page": 2, "scores": {"bm25": 1.0}}
        return httpx.Response(200, json={"results": [hit], "mode": "text", "collection": "c"})

    s = HttpSearcher("http://srv/", client=httpx.Client(transport=httpx.MockTransport(handler)))
    hits = s.search("q", k=3, mode="text", rerank=None)
    assert hits[0]["source_uri"] == "/d/a.pdf" and hits[0]["stage_scores"] == {"bm25": 1.0}
    assert seen[-1] == {"query": "q", "k": 3, "mode": "text"}  # rerank=None: left to the server's default
    with pytest.raises(ValueError, match="unknown search mode 'dense'"):
        s.search("q", mode="dense", rerank=False)


def test_import_vidore_beir(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    (src / "qrels").mkdir(parents=True)
    (src / "corpus.jsonl").write_text(
        json.dumps({"_id": "c1", "doc-id": "reports/annual.pdf", "page_number_in_doc": 3}) + "\n"
        + json.dumps({"_id": "c2", "image_filename": "images/chart.png"}) + "\n"
    )  # fmt: skip
    (src / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "revenue?", "answer": "up"}) + "\n")
    with (src / "qrels" / "test.tsv").open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerows([["query-id", "corpus-id", "score"], ["q1", "c1", "2"], ["q1", "c2", "1"]])
    info = import_vidore(src, tmp_path / "out")
    qs = load_queries(info["queries"])
    rs = load_qrels(info["qrels"], qs)
    assert qs[0].answer == "up"
    assert [(r.source, r.page, r.relevance) for r in rs] == [("annual.pdf", 3, 2), ("chart.png", None, 1)]
    zero_based = import_vidore(src, tmp_path / "out0", page_base=0)
    assert '"page": 4' in Path(zero_based["qrels"]).read_text()
    (src / "qrels" / "test.tsv").write_text("q1\tmissing\t1\n")
    with pytest.raises(EvalInputError, match=r"test\.tsv:1: corpus-id 'missing'"):
        import_vidore(src, tmp_path / "out2")


def test_import_vidore_parquet(tmp_path: Path) -> None:
    table = pa.table({
        "query": ["what is shown?", None, "which page?"],
        "image_filename": ["images/a.png", "images/b.png", "doc.pdf"],
        "page": ["", "", "5"],
        "image": [{"bytes": b"\x89PNG-a"}, {"bytes": b"\x89PNG-b"}, {"bytes": None}],
        "answer": ["a cat", None, None],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "test.parquet")
    res = runner.invoke(app, ["eval", "--import-vidore", str(tmp_path / "test.parquet"), "--out", str(tmp_path / "o"),
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["n_queries"] == 2 and info["n_qrels"] == 2
    rs = [json.loads(x) for x in Path(info["qrels"]).read_text().splitlines()]
    assert rs == [{"query_id": "0", "relevance": 1, "source": "a.png"},
                  {"query_id": "2", "relevance": 1, "source": "doc.pdf", "page": 5}]  # fmt: skip
    assert (tmp_path / "o" / "corpus" / "a.png").read_bytes() == b"\x89PNG-a"
