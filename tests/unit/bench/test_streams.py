"""TTFT, inter-token latency and token counts, from servers that sleep known delays, and the stream parsers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrag.bench.load import LoadSettings, run_load
from mmrag.bench.workloads import AnswerParser, ChatParser, SearchParser, load_queries, make_workload

pytestmark = pytest.mark.unit

TTFT_MS, ITL_MS, TOKENS = 60.0, 25.0, 5


def _run(url: str, tmp_path: Path, **kw: object) -> tuple[dict, list[dict]]:
    s = LoadSettings(url=url, out=str(tmp_path / "o"), warmup_s=0.0, plots=False, **kw)  # type: ignore[arg-type]
    summary = run_load(s)
    recs = [json.loads(x) for x in (tmp_path / "o" / "records.jsonl").read_text().splitlines()]
    return summary["runs"][0], recs


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
@pytest.mark.parametrize("endpoint", ["chat", "answer"])
def test_ttft_and_itl_match_the_servers_delays(trivial_server, tmp_path, client, endpoint) -> None:
    srv = trivial_server(tokens=TOKENS, ttft_ms=TTFT_MS, itl_ms=ITL_MS)
    run, recs = _run(srv.url, tmp_path, endpoint=endpoint, client=client, concurrency=[2], requests=4)
    assert run["ok"] == 4, run["errors_by_status"]
    # Lower bounds are exact (the server never writes early); upper bounds leave room for a loaded 2-core machine
    # where client and server share one process. TTFT must be the first delta, not the end of the stream.
    for r in recs:
        assert r["ttft_ms"] >= TTFT_MS - 1
        assert r["ttft_ms"] <= r["latency_ms"] - (TOKENS - 1) * ITL_MS / 2
        assert len(r["itl_ms"]) == TOKENS - 1 and min(r["itl_ms"]) >= 0
        assert r["tokens"] == TOKENS and r["tokens_source"] == "usage"
        assert r["latency_ms"] >= TTFT_MS + (TOKENS - 1) * ITL_MS - 1
    assert TTFT_MS - 1 <= run["ttft_ms"]["p50"] <= TTFT_MS + 100
    assert ITL_MS - 1 <= run["itl_ms"]["p50"] <= ITL_MS + 15
    assert run["ttft_ms"]["count"] == 4 and run["itl_ms"]["count"] == 4 * (TOKENS - 1)
    assert run["output_tokens_per_s"] > 0
    # decode rate per request: (tokens - 1) / (latency - ttft) ~ 1000 / ITL
    assert 0.4 * 1e3 / ITL_MS < run["per_request_tokens_per_s"]["p50"] <= 1e3 / ITL_MS * 1.05


def test_tokens_fall_back_to_delta_count_without_usage(trivial_server, tmp_path) -> None:
    srv = trivial_server(tokens=TOKENS, ttft_ms=TTFT_MS, itl_ms=ITL_MS)
    run, recs = _run(
        srv.url, tmp_path, endpoint="chat", concurrency=[1], requests=2, extra_body={"stream_options": None}
    )
    assert run["ok"] == 2
    assert {(r["tokens"], r["tokens_source"]) for r in recs} == {(TOKENS, "deltas")}


def test_non_streaming_chat_and_search(trivial_server, tmp_path) -> None:
    srv = trivial_server(tokens=7)
    run, recs = _run(srv.url, tmp_path, endpoint="chat", stream=False, concurrency=[1], requests=2)
    assert run["ok"] == 2 and {r["tokens"] for r in recs} == {7} and recs[0]["ttft_ms"] is None
    run, recs = _run(srv.url, tmp_path, endpoint="search", k=3, concurrency=[1], requests=2)
    assert run["ok"] == 2 and {r["n_results"] for r in recs} == {3}


def _feed(parser, lines: list[str]) -> None:
    for t, line in enumerate(lines):
        parser.feed(line + "\n", float(t))
    parser.finish(float(len(lines)))


def test_answer_parser_reads_mmrags_event_stream() -> None:
    p = AnswerParser()
    _feed(
        p,
        [
            "event: token",
            'data: {"text": "Perm"}',
            "",
            "event: token",
            'data: {"text": ""}',  # an empty delta is not a token
            "",
            "event: token",
            'data: {"text": "utation"}',
            "",
            "event: citations",
            'data: {"citations": [{"n": 1, "text": "a delta field here is not a token"}]}',
            "",
            "event: done",
            'data: {"finish_reason": "stop", "usage": {"prompt_tokens": 9, "completion_tokens": 2}}',
            "",
        ],
    )
    assert p.token_times == [2.0, 8.0] and p.usage_tokens == 2 and p.done and p.error is None


def test_answer_parser_error_event_and_plain_text_data() -> None:
    p = AnswerParser()
    _feed(p, ["event: token", 'data: {"text": "a"}', "", "event: error", 'data: {"error": {"message": "boom"}}', ""])
    assert p.error == "stream_error: boom" and len(p.token_times) == 1
    p = AnswerParser()
    _feed(p, ["data: hello", "", "data: world", "data: again", "", "data: [DONE]", ""])  # multi-line data: one event
    assert p.token_times == [1.0, 4.0] and p.done


def test_chat_parser_openai_chunks_usage_done_and_errors() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    role = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    usage = {"choices": [], "usage": {"completion_tokens": 3}}
    p = ChatParser()
    lines = [f"data: {json.dumps(role)}", "", *[f"data: {json.dumps(chunk)}\r" for _ in range(3)]]
    _feed(p, [*lines, "", f"data: {json.dumps(usage)}", "", "data: [DONE]", ""])
    # three data lines with no blank between them are one event (SSE): the JSON does not parse -> error
    assert p.error and p.error.startswith("bad_response")
    p = ChatParser()
    body = [x for _ in range(3) for x in (f"data: {json.dumps(chunk)}", "")]
    _feed(p, [f"data: {json.dumps(role)}", "", *body, f"data: {json.dumps(usage)}", "", "data: [DONE]", ""])
    assert p.token_times == [3.0, 5.0, 7.0] and p.usage_tokens == 3 and p.done and p.error is None
    p = ChatParser()
    _feed(p, ['data: {"error": {"message": "overloaded", "code": 503}}', ""])
    assert p.error == "stream_error: overloaded"


def test_whole_body_parsers() -> None:
    p = SearchParser()
    p.whole(b'{"results": [1, 2]}')
    assert p.n_results == 2 and p.error is None
    p = SearchParser()
    p.whole(b"<html>")
    assert p.error == "bad_response: body is not JSON"
    p = ChatParser()
    p.whole(b'{"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 1}}')
    assert p.usage_tokens == 1 and p.error is None


def test_bodies_and_queries_file(tmp_path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"query": "a", "k": 3, "filters": {"modalities": ["page"]}}\nplain line\n')
    qs = load_queries(f)
    assert qs == [{"query": "a", "k": 3, "filters": {"modalities": ["page"]}}, {"query": "plain line"}]
    search = make_workload("search", k=5, mode="hybrid")
    assert json.loads(search.bodies(qs)[0]) == {
        "query": "a",
        "k": 3,
        "mode": "hybrid",
        "filters": {"modalities": ["page"]},
    }
    chat = make_workload("chat", max_tokens=8, collection="docs", extra_body={"temperature": 0})
    body = json.loads(chat.bodies(qs)[0])
    assert body["messages"] == [{"role": "user", "content": "a"}] and "k" not in body and "filters" not in body
    # retrieval options go in mmrag's extra field
    assert body["mmrag"] == {"collection": "docs", "k": 3, "filters": {"modalities": ["page"]}}
    assert json.loads(chat.bodies(qs)[1])["mmrag"] == {"collection": "docs"}
    assert body["stream"] and body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 8
    assert body["model"] == "mmrag" and body["temperature"] == 0
    answer = make_workload("answer", stream=False, collection="c1")
    assert json.loads(answer.bodies([{"query": "q"}])[0]) == {"query": "q", "collection": "c1", "stream": False}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"k": 1}\n')
    with pytest.raises(ValueError, match="'query' field"):
        load_queries(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_queries(tmp_path / "missing.txt")
