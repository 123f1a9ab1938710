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
    summary = ingest([str(d / "coin.pdf"), str(d / "cup.mp4")], cfg, collection="docs")
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
