"""End to end with a vLLM generator: ingest a real PDF and video, deploy retriever, reranker, vLLM (Ray Serve
LLM on the CPU build) and gateway, then answer through /v1/answer (plain and streamed), the official openai client
on /v1/chat/completions (streamed), and `mmrag ask`.

The generator here is the tiny Qwen2-VL, not local-cpu's default text-only SmolLM2: this is the test of the
vision-language path, with the retrieved pages' images in the prompt through the gateway (SmolLM2 answers from
its sources in test_generator.py). Its words are noise, so the tests check structure: tokens arrive, the answer is
the streamed text, citations are ingested items in prompt order, usage and timings are consistent."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mmrag.config import load_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

DATA = Path(__file__).resolve().parents[1] / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rag(ray_local, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    from ray import serve

    from mmrag.ingest.pipeline import ingest
    from mmrag.ingest.warm import WarmStages
    from mmrag.serve.run import run_app

    d = tmp_path_factory.mktemp("rag")
    for name in ("coin.pdf", "cup.mp4"):
        shutil.copy(DATA / name, d / name)
    vlm = {"model": "tiny:qwen2-vl", "max_model_len": 1024, "max_tokens": 32, "max_prompt_tokens": None}
    over = {
        "store": {"uri": str(d / "db")},
        "ingest": {"ocr": "never"},
        "server": {"port": _free_port()},
        "calibration": {"enabled": False},  # covered by test_serve_app
        "generator": {"allow_ignore_eos": True},  # off by default; here it proves the option reaches vLLM
    }
    cfg = load_config("local-cpu", {**over, "models": {"generator": vlm}})
    assert cfg.generator.engine == "vllm"
    # in this process with warm stages (Ray Data's start-up is test_ingest's to pay)
    summary = ingest([str(d / "coin.pdf"), str(d / "cup.mp4")], cfg, collection="docs", runner=WarmStages(cfg))
    assert summary.pages == 11 and summary.clips == 1
    url = run_app(cfg)
    yield url, cfg
    serve.shutdown()


def _cited_items_exist(cites: list[dict], cfg) -> None:
    from mmrag.store import LanceStore

    assert cites and [c["n"] for c in cites] == list(range(1, len(cites) + 1))
    rows = LanceStore(cfg.store.uri).get_items([c["id"] for c in cites], ["source_uri", "page"])
    assert set(rows) == {c["id"] for c in cites}
    assert all(rows[c["id"]]["source_uri"] == c["source"] and rows[c["id"]]["page"] == c["page"] for c in cites)


def test_answer_plain_and_streamed(rag) -> None:
    url, cfg = rag
    body = {"query": "Which test statistics does coin provide?", "k": 3, "collection": "docs", "max_tokens": 12}
    r = httpx.post(f"{url}/v1/answer", json=body, timeout=300)
    assert r.status_code == 200, r.text
    plain = r.json()
    assert plain["model"] == cfg.models.generator.served_model_name
    assert 0 < plain["usage"]["completion_tokens"] <= 12 and plain["usage"]["prompt_tokens"] > 50
    assert plain["finish_reason"] in ("stop", "length")
    _cited_items_exist(plain["citations"], cfg)
    assert plain["timings"]["generate"] > 0 and plain["timings"]["total"] >= plain["timings"]["generate"]

    events = []
    with httpx.stream("POST", f"{url}/v1/answer", json={**body, "stream": True}, timeout=300) as r:
        assert r.status_code == 200
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    kinds = [e for e, _ in events]
    assert kinds[-2:] == ["citations", "done"] and kinds.count("token") >= 1
    done = events[-1][1]
    assert done["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"], "greedy: same answer length"
    assert "".join(d["text"] for e, d in events if e == "token") == plain["answer"], "greedy decoding"
    assert events[-2][1]["citations"] == plain["citations"]
    assert 0 < done["timings"]["ttft"] <= done["timings"]["total"]


def test_openai_client_streams_from_vllm(rag) -> None:
    from openai import OpenAI

    url, cfg = rag
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=cfg.models.generator.served_model_name,
        messages=[{"role": "user", "content": "What is a permutation test?"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mmrag": {"collection": "docs", "k": 2}, "ignore_eos": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas, "tokens were streamed"
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == "length", "ignore_eos reached vLLM: exactly max_tokens were generated"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    _cited_items_exist(last.model_extra["citations"], cfg)


def test_mmrag_ask_prints_answer_and_sources(rag) -> None:
    url, _ = rag
    cmd = [sys.executable, "-m", "mmrag.cli.main", "ask", "conditional inference", "--url", url, "-c", "docs"]
    out = subprocess.run([*cmd, "--max-tokens", "6"], capture_output=True, text=True, timeout=300, env=os.environ)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Sources:" in out.stdout and "[1] " in out.stdout and "coin.pdf" in out.stdout
    js = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300, env=os.environ)
    assert js.returncode == 0, js.stderr[-2000:]
    data = json.loads(js.stdout)
    assert data["answer"] and data["citations"][0]["n"] == 1
    bad = subprocess.run([*cmd[:-2], "-c", "nope"], capture_output=True, text=True, timeout=300, env=os.environ)
    assert bad.returncode == 1 and "no collection named 'nope'" in bad.stderr


def _summary_events(url: str, doc: str, body: dict) -> list[tuple[str | None, dict]]:
    from mmrag.sse import iter_events

    with httpx.stream("POST", f"{url}/v1/videos/{doc}/summary", json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        return [(ev.event, ev.json()) for ev in iter_events(r.iter_lines())]


def test_video_summary_json_stream_cache_and_cli(rag) -> None:
    """The sample video summarised by vLLM from its frames (ingested without OCR: the tiny Qwen2-VL sees two of
    them); chapters inside the video citing its clip; the cache; the errors; `mmrag summarize` with the file."""
    from mmrag.store import LanceStore

    url, cfg = rag
    docs = {d["kind"]: d for d in LanceStore(cfg.store.uri).documents("docs")}
    video, pdf = docs["video"], docs["pdf"]
    path = f"{url}/v1/videos/{video['doc_id']}/summary"
    r = httpx.post(path, json={"refresh": True}, timeout=300)  # refresh: a rerun of the module starts afresh
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["cached"] is False and out["usage"]["calls"] == 1 and out["usage"]["completion_tokens"] > 0
    assert 8.0 <= out["duration_s"] <= 8.2, "the clips' end, from ffprobe 8.10 s"
    (ch,) = out["chapters"]
    assert ch["generated"] and ch["summary"] and out["summary"] == ch["summary"], "one chapter is the summary"
    assert 0 <= ch["start_s"] < ch["end_s"] <= out["duration_s"]
    rows = LanceStore(cfg.store.uri).get_items([c["id"] for c in ch["citations"]], ["start_s", "modality"])
    assert rows and all(r["modality"] == "clip" for r in rows.values())
    assert out["timings"]["first_chapter"] <= out["timings"]["total"]

    events = _summary_events(url, video["doc_id"], {"stream": True})
    assert [e for e, _ in events] == ["chapter", "token", "done"] and events[-1][1]["cached"] is True
    assert events[-1][1]["chapters"] == out["chapters"] and events[-1][1]["timings"]["total"] < 2000

    fresh = _summary_events(url, video["doc_id"], {"stream": True, "refresh": True})
    assert fresh[0][0] == "chapter" and fresh[-1][0] == "done" and fresh[-1][1]["cached"] is False
    assert fresh[-1][1]["summary"] == out["summary"], "greedy decoding: the same summary again"

    for doc, status, code in ((pdf["doc_id"], 422, "not_a_video"), ("0" * 32, 404, "not_found"),
                              ("not-an-id", 400, "invalid_request")):  # fmt: skip
        r = httpx.post(f"{url}/v1/videos/{doc}/summary", json={}, timeout=60)
        assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert "not a video" in httpx.post(f"{url}/v1/videos/{pdf['doc_id']}/summary").json()["error"]["message"]

    cmd = [sys.executable, "-m", "mmrag.cli.main", "summarize", video["source_uri"], "--url", url]
    cli = subprocess.run([*cmd, "--db", cfg.store.uri], capture_output=True, text=True, timeout=300, env=os.environ)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "[0:00-0:08] " in cli.stdout and "(clip 1)" in cli.stdout and "from the cache" in cli.stdout
