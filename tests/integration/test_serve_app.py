"""The Serve app, for real: ingest (with the warm stages that uploads use; Ray Data's own ingest is test_ingest's),
deploy retriever, reranker, generator and gateway on a local
Ray, and talk HTTP to /v1/search, /v1/answer, /v1/chat/completions (with the official openai client), the item
image endpoints, the OpenAPI schema and Ray's Prometheus endpoint.

The generator here is the echo engine inside Ray Serve LLM's LLMServer (instant, deterministic answers that quote
the prompt); test_rag_vllm.py runs the same API with vLLM."""

from __future__ import annotations

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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_local, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    """Two collections ingested, the app deployed; yields (base_url, cfg)."""
    from ray import serve

    from mmrag.ingest.pipeline import ingest
    from mmrag.ingest.warm import WarmStages
    from mmrag.serve.run import run_app

    d = tmp_path_factory.mktemp("serve")
    for name in ("coin.pdf", "cup.mp4"):
        shutil.copy(DATA / name, d / name)
    cfg = load_config(
        "local-cpu",
        {
            "store": {"uri": str(d / "db")},
            "ingest": {"ocr": "never"},
            "server": {"port": _free_port()},
            "generator": {"engine": "echo"},
            # two retrievers: a killed one's searches are retried on the other (test_a_killed_retriever_...)
            "retriever": {"num_replicas": 2, "autoscaling": None},
            # the vision-language prompt (page images reach the echo engine); local-cpu's SmolLM2 reads text only
            "models": {
                "generator": {
                    "model": "tiny:qwen2-vl",
                    "max_model_len": 1024,
                    "max_tokens": 32,
                    "max_prompt_tokens": None,
                }
            },
        },
    )
    # in this process with warm stages: Ray Data's start-up (~10 s a call) is test_ingest's and test_demo's to pay
    warm = WarmStages(cfg)
    ingest([str(d / "coin.pdf"), str(d / "cup.mp4")], cfg, collection="docs", runner=warm)
    ingest([str(d / "coin.pdf")], cfg, collection="other", runner=warm)
    del warm
    url = run_app(cfg)
    yield url, cfg, d
    serve.shutdown()


def _search(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json=body, timeout=120)


@pytest.mark.parametrize("mode", ["visual", "text", "dense", "hybrid"])
def test_search_modes_return_ranked_cited_items(served, mode: str) -> None:
    url, _, _ = served
    r = _search(url, query="permutation test", k=5, collection="docs", mode=mode)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == mode and body["collection"] == "docs"
    res = body["results"]
    assert 0 < len(res) <= 5
    scores = [h["score"] for h in res]
    assert scores == sorted(scores, reverse=True)
    for h in res:
        assert h["modality"] in ("page", "clip")
        assert h["source"].endswith(("coin.pdf", "cup.mp4"))
        if h["modality"] == "page":
            assert 1 <= h["page"] <= 11
        else:
            assert h["start_s"] is not None and h["end_s"] > h["start_s"]
    if mode == "text":  # every text hit came from BM25, so it holds a query word
        assert all("bm25" in h["scores"] and h["modality"] == "page" for h in res)
    if mode == "visual":
        assert all("maxsim" in h["scores"] for h in res)
    if mode == "dense":  # the real all-MiniLM-L6-v2 over the pages' text (and the clip's file name)
        assert all("dense" in h["scores"] for h in res)
    if mode == "hybrid":  # fused with the collection's calibrated weights
        assert all("fused" in h["scores"] for h in res)


def test_concurrent_searches_are_batched_and_each_gets_its_own_results(served) -> None:
    """Many searches at once are batched whole in the retriever (one encoder pass, one store take; batches merged by
    the coalescer): every request must get exactly what it gets alone, across modes, collections and filters."""
    import asyncio

    url, _, _ = served
    bodies = [
        {"query": q, "k": k, "collection": c, "mode": m, **({"filters": f} if f else {})}
        for q, k, c, m, f in [
            ("permutation test", 5, "docs", "visual", None),
            ("a cup on a table", 3, "docs", "visual", {"modalities": ["clip"]}),
            ("conditional inference", 4, "docs", "hybrid", None),
            ("permutation test", 5, "docs", "text", None),
            ("table of p-values", 2, "other", "visual", None),
            ("asymptotic distribution", 6, "docs", "hybrid", {"modalities": ["page"]}),
        ]
    ]

    def key(r: httpx.Response) -> list[tuple[str, float]]:
        assert r.status_code == 200, r.text
        return [(h["id"], round(h["score"], 5)) for h in r.json()["results"]]

    alone = [key(_search(url, **b)) for b in bodies]

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*(c.post(f"{url}/v1/search", json=b) for b in bodies * 4))

    responses = asyncio.run(together())
    assert [key(r) for r in responses] == alone * 4
    assert max(r.json()["timings_ms"]["batch"] for r in responses) > 1  # some of them really shared a batch


def test_images_and_thumbnails_are_served(served) -> None:
    url, _, _ = served
    hit = _search(url, query="table", k=1, collection="docs").json()["results"][0]
    img = httpx.get(url + hit["image_url"], timeout=30)
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"
    th = httpx.get(url + hit["thumbnail_url"], timeout=30)
    assert th.status_code == 200 and th.content[:4] == b"\x89PNG"
    assert httpx.get(f"{url}/v1/items/{'0' * 32}/image").status_code == 404
    assert httpx.get(f"{url}/v1/items/..%2F..%2Fetc/image").status_code in (400, 404)


def test_filters_and_injection_attempts(served) -> None:
    url, _, d = served
    clips = _search(url, query="cup", k=10, collection="docs", mode="visual", filters={"modalities": ["clip"]})
    assert clips.status_code == 200 and all(h["modality"] == "clip" for h in clips.json()["results"])
    only_pdf = _search(url, query="x", k=20, collection="docs", filters={"source_uris": [str(d / "coin.pdf")]})
    assert {h["source"] for h in only_pdf.json()["results"]} == {str(d / "coin.pdf")}
    for evil in ["docs' OR '1'='1", "docs; DROP TABLE items", "docs)) OR ((1=1"]:
        r = _search(url, query="x", k=5, collection=evil)
        assert r.status_code == 400, r.text
    r = _search(url, query="x", k=50, collection="docs", filters={"source_uris": ["x' OR '1'='1"]})
    assert r.status_code == 200 and r.json()["results"] == []
    # collections never leak into each other
    # (visual mode ranks every item, so a clip of `docs` would show up here if collections leaked)
    other = _search(url, query="cup", k=50, collection="other", mode="visual").json()["results"]
    assert other and all(h["modality"] == "page" for h in other)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": "", "k": 5}, 400, "invalid_request"),
        ({"query": "   ", "k": 5}, 400, "invalid_request"),
        ({"query": "x", "k": 0}, 400, "invalid_request"),
        ({"query": "x", "k": 100000}, 400, "invalid_request"),
        ({"query": "x" * 5000}, 400, "invalid_request"),
        ({"query": "x", "collection": "nope"}, 404, "collection_not_found"),
    ],
)
def test_bad_requests_get_json_errors(served, body: dict, status: int, code: str) -> None:
    url, _, _ = served
    r = _search(url, **body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_openapi_schema_is_complete(served) -> None:
    url, _, _ = served
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    for path in (
        "/v1/search",
        "/v1/answer",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/items/{item_id}/image",
        "/healthz",
    ):
        assert path in spec["paths"]
    req = spec["components"]["schemas"]["SearchRequest"]
    assert {"query", "k", "collection", "mode", "filters"} <= set(req["properties"])
    assert "400" in spec["paths"]["/v1/search"]["post"]["responses"]
    ans = spec["components"]["schemas"]["AnswerResponse"]
    assert {"answer", "citations", "timings"} <= set(ans["properties"])
    assert "text/event-stream" in spec["paths"]["/v1/answer"]["post"]["responses"]["200"]["content"]
    assert httpx.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"


def test_cli_search_in_process_and_through_the_server(served) -> None:
    url, cfg, _ = served
    env = {**os.environ, "MMRAG_STORE__URI": cfg.store.uri}
    base = [sys.executable, "-m", "mmrag.cli.main", "search", "permutation test", "--collection", "docs", "--json"]
    local = subprocess.run([*base, "--k", "3"], env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-2000:]
    rows = json.loads(local.stdout)
    assert len(rows) == 3 and set(rows[0]) == {"id", "source", "page", "start_s", "end_s", "modality", "score"}
    remote = subprocess.run([*base, "--k", "3", "--url", url], env=env, capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stderr[-2000:]
    # the tiny random model ties often, so compare scores rather than the order of tied ids
    assert [r["score"] for r in json.loads(remote.stdout)] == pytest.approx([r["score"] for r in rows], rel=1e-3)


# ------------------------------------------------------------------------------------------------ answers
def _answer(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/answer", json=body, timeout=120)


def _sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


def _check_citations(cites: list[dict], store_uri: str, k: int) -> None:
    from mmrag.store import LanceStore

    assert 0 < len(cites) <= k
    assert [c["n"] for c in cites] == list(range(1, len(cites) + 1))
    rows = LanceStore(store_uri).get_items([c["id"] for c in cites], ["source_uri", "modality", "page", "start_s"])
    for c in cites:
        row = rows[c["id"]]  # every citation is an ingested, visible item
        assert (c["source"], c["modality"], c["page"], c["start_s"]) == (
            row["source_uri"],
            row["modality"],
            row["page"],
            row["start_s"],
        )


def test_answer_cites_ingested_items(served) -> None:
    url, cfg, _ = served
    r = _answer(url, query="permutation test", k=3, collection="docs")
    assert r.status_code == 200, r.text
    body = r.json()
    # the echo engine answers "echo: <images> image(s). <start of the last user message>"
    assert body["answer"].startswith("echo: ") and body["model"] == "mmrag"
    _check_citations(body["citations"], cfg.store.uri, 3)
    n_img = int(body["answer"].split()[1])
    assert 1 <= n_img <= cfg.models.generator.max_images_per_prompt, "page images reach the generator"
    assert body["answer"].split()[3:5] == ["[1]", body["citations"][0]["source"].rsplit("/", 1)[-1] + ","]
    assert body["citations"][0]["cited"], "the echo quotes label [1], so the answer cites it"
    assert {"retrieve", "rerank", "prompt", "generate", "total"} <= set(body["timings"])
    assert body["usage"]["completion_tokens"] > 0


def test_answer_streams_tokens_then_citations(served) -> None:
    url, _, _ = served
    plain = _answer(url, query="permutation test", k=3, collection="docs").json()
    with httpx.stream(
        "POST",
        f"{url}/v1/answer",
        json={"query": "permutation test", "k": 3, "collection": "docs", "stream": True},
        timeout=120,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r.read().decode())
    kinds = [e for e, _ in events]
    assert kinds[-2:] == ["citations", "done"] and set(kinds[:-2]) == {"token"} and len(kinds) > 3
    assert "".join(d["text"] for e, d in events if e == "token") == plain["answer"]
    assert events[-2][1]["citations"] == plain["citations"]
    done = events[-1][1]
    assert done["finish_reason"] in ("stop", "length") and done["timings"]["ttft"] <= done["timings"]["total"]


def test_a_question_can_carry_an_image(served) -> None:
    """An ingested page's own image finds that page (identical pixels give the tiny ColQwen2 the same tokens), as
    JSON base64, a data URL or a multipart file; the answer and chat show it to the (echoed) vision generator."""
    import base64

    from openai import OpenAI

    url, _, _ = served
    page = _search(url, query="permutation test", k=1, collection="docs", mode="text").json()["results"][0]
    img = httpx.get(f"{url}{page['image_url']}", timeout=30).content
    b64 = base64.b64encode(img).decode()
    alone = _search(url, image=b64, k=3, collection="docs")
    assert alone.status_code == 200, alone.text
    body = alone.json()
    assert body["mode"] == "visual" and body["results"][0]["id"] == page["id"]
    assert any("no better than chance" in n for n in body["notes"]), "the tiny visual model is flagged"
    files = {"image": ("page.jpg", img, "image/jpeg")}
    multi = httpx.post(f"{url}/v1/search", data={"request": '{"k": 3, "collection": "docs"}'}, files=files, timeout=60)
    assert multi.status_code == 200 and multi.json()["results"][0]["id"] == page["id"]
    both = _search(url, query="permutation test", image=f"data:image/jpeg;base64,{b64}", k=3, collection="docs")
    assert both.status_code == 200 and both.json()["mode"] == "hybrid"
    for bad, code in (
        ({"image": "https://example.com/x.png"}, "remote_image_refused"),
        ({"image": "abc$"}, "invalid_image"),
    ):
        r = _search(url, collection="docs", **bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    r = _search(url, image=b64, mode="text", collection="docs")
    assert r.status_code == 400 and r.json()["error"]["field"] == "mode"
    # answer: the generator sees the question's image besides the sources' (echo counts images)
    plain = _answer(url, query="what is this?", k=2, collection="docs").json()
    shown = _answer(url, query="what is this?", image=b64, k=2, collection="docs").json()
    assert int(shown["answer"].split()[1]) == int(plain["answer"].split()[1]) + 1, shown
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}},
    ]
    extra = {"mmrag": {"collection": "docs", "k": 2}}

    def images(parts: list) -> int:
        msg = [{"role": "user", "content": parts}]
        done = client.chat.completions.create(model="mmrag", messages=msg, max_tokens=8, extra_body=extra)
        return int(done.choices[0].message.content.split()[1])

    assert images(content) == images(content[:1]) + 1


def test_openai_client_chat_completions(served) -> None:
    from openai import OpenAI

    url, cfg, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["mmrag"]
    extra = {"mmrag": {"collection": "docs", "k": 2}}
    messages = [{"role": "user", "content": "permutation test"}]
    done = client.chat.completions.create(model="mmrag", messages=messages, max_tokens=12, extra_body=extra)
    text = done.choices[0].message.content
    assert text.startswith("echo: ") and done.usage.completion_tokens == len(text.split()) <= 12
    _check_citations(done.model_extra["citations"], cfg.store.uri, 2)

    chunks = list(
        client.chat.completions.create(
            model="mmrag",
            messages=messages,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.model_extra["citations"] == done.model_extra["citations"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == done.usage.completion_tokens


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/answer", {"query": ""}, 400, "invalid_request"),
        ("/v1/answer", {"query": "x", "collection": "nope"}, 404, "collection_not_found"),
        ("/v1/answer", {"query": "x", "collection": "docs", "max_tokens": 100000}, 400, "invalid_request"),
        ("/v1/answer", {"query": "x", "stream": "sometimes"}, 400, "invalid_request"),
        ("/v1/chat/completions", {"messages": []}, 400, "invalid_request"),
        (
            "/v1/chat/completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model_not_found",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": "x"}]}, 400, "invalid_request"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 3}, 400, "invalid_request"),
        # generation limits: forcing long answers is off by default; pass-through fields are type-checked
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "mmrag": {"collection": "docs"}, "ignore_eos": True},
            400,
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "mmrag": {"collection": "docs"}, "min_tokens": 50},
            400,
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "mmrag": {"collection": "docs"}, "top_k": "5"},
            400,
            "invalid_request",
        ),
    ],
)
def test_bad_answer_requests_get_json_errors(served, path: str, body: dict, status: int, code: str) -> None:
    url, _, _ = served
    r = httpx.post(url + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_prometheus_metrics_per_stage(served) -> None:
    import time

    import ray

    url, _, _ = served
    assert _answer(url, query="metrics please", k=2, collection="docs").status_code == 200
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:  # Ray's agent exports every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        if 'stage="generate"' in text and "ray_serve_num_http_requests" in text:
            break
        time.sleep(3)
    assert "ray_mmrag_stage_latency_ms_bucket" in text and 'stage="retrieve"' in text and 'stage="generate"' in text
    assert "ray_mmrag_requests_total" in text and 'endpoint="answer"' in text
    assert "ray_serve_num_http_requests" in text, "Ray Serve's own metrics come from the same endpoint"


# ------------------------------------------------------------------------------------------------ quality
SLICE = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "slice"


def test_collections_show_their_calibration(served) -> None:
    url, _, _ = served
    got = httpx.get(f"{url}/v1/collections", timeout=30).json()["collections"]["docs"]["calibration"]
    assert got is not None and got["fingerprint"]
    if got.get("weights"):  # measured: the random-weight visual model is switched off by measurement
        assert got["channels"]["visual"]["above_chance"] is False and "visual" not in got["weights"]
        assert got["channels"]["bm25"]["above_chance"] is True


@pytest.mark.parametrize("where", ["in-process", "server"])
def test_quality_slice_fusion_and_reranking_never_lose(served, where: str) -> None:
    """On real questions about coin.pdf (benchmarks/data/slice), the fused ranking is not worse than its best channel
    and reranking (as calibrated) does not lower it: the regression test for the quality targets."""
    from mmrag.eval import run_eval

    url, cfg, _ = served
    kw = {"url": url} if where == "server" else {"cfg": cfg}
    report = run_eval(SLICE / "queries.jsonl", SLICE / "qrels.jsonl", collection="docs", **kw)
    ndcg = {r["name"]: r["means"]["ndcg@5"] for r in report["runs"] if r.get("available")}
    assert set(ndcg) >= {"visual", "bm25", "dense", "fused", "fused+rerank", "default"}, ndcg
    best = max(ndcg["visual"], ndcg["bm25"], ndcg["dense"])
    assert ndcg["bm25"] > 0.3, ndcg  # real questions, real BM25: far above chance
    from mmrag.store import LanceStore

    cal = LanceStore.from_config(cfg.store).calibration("docs")
    assert ndcg["fused"] >= best - 0.01, (ndcg, cal)
    assert ndcg["fused+rerank"] >= ndcg["fused"] - 1e-9, ndcg
    assert ndcg["default"] >= best - 0.01, ndcg


# ------------------------------------------------------------------------------------------------ faults (last: it
# kills a replica)
def test_a_killed_retriever_costs_no_search(served) -> None:
    """SIGKILL-like death of a retriever replica under 4 clients' searches: the gateway retries each interrupted
    search once on the other replica (mmrag.serve.retries), so no client sees an error; Serve replaces the replica."""
    import threading
    import time

    import ray

    url, _, _ = served

    def retrievers() -> list[str]:
        return sorted(
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and "#Retriever#" in a["name"]
        )

    before = retrievers()
    assert len(before) == 2, before
    stop = threading.Event()
    statuses: list[int] = []
    errors: list[str] = []

    def client(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                try:
                    body = {"query": f"permutation test {i}", "collection": "docs", "k": 5}
                    r = c.post(f"{url}/v1/search", json=body)
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                except httpx.HTTPError as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join(60)
    assert len(statuses) > 20 and not errors, (len(statuses), errors[:3])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (before[0] in retrievers() or len(retrievers()) < 2):
        time.sleep(1)
    after = retrievers()
    assert before[0] not in after and len(after) == 2, after  # Serve started a replacement
    assert _search(url, query="permutation test", collection="docs", k=3).status_code == 200


# ------------------------------------------------------------------------------------------------ sharded index (after
# the faults: it redeploys the app)
def test_two_retriever_shards_answer_as_one(served) -> None:
    """retriever.shards 2 on the same store: the app redeployed with a retriever deployment per shard (the gateway
    encodes once, fans out, merges) answers every mode, filtered and not, as the one-index app did."""
    from ray import serve

    from mmrag import constants
    from mmrag.serve.app import build_app_from_config

    url, cfg, _ = served
    bodies = [
        {"query": q, "k": k, "collection": c, "mode": m, **({"filters": f} if f else {})}
        for q, k, c, m, f in [
            ("permutation test", 8, "docs", "visual", None),
            ("permutation test", 8, "docs", "text", None),
            ("a cup on a table", 8, "docs", "dense", None),
            ("conditional inference", 8, "docs", "hybrid", None),
            ("asymptotic distribution", 5, "docs", "hybrid", {"modalities": ["page"], "page_min": 2}),
            ("table of p-values", 4, "other", "hybrid", None),
        ]
    ]

    def key(r: httpx.Response) -> list[tuple[str, float]]:
        assert r.status_code == 200, r.text
        return [(h["id"], round(h["score"], 5)) for h in r.json()["results"]]

    one = [key(_search(url, **b)) for b in bodies]
    sharded = cfg.model_copy(
        update={"retriever": cfg.retriever.model_copy(update={"shards": 2, "num_replicas": 1, "num_cpus": 0.2})}
    )
    serve.run(build_app_from_config(sharded), name=constants.APP_NAME, route_prefix=cfg.server.route_prefix)
    deployments = serve.status().applications[constants.APP_NAME].deployments
    assert {"Retriever-shard-0", "Retriever-shard-1"} <= set(deployments) and "Retriever" not in deployments
    responses = [_search(url, **b) for b in bodies]
    assert [key(r) for r in responses] == one
    assert all(r.json()["timings_ms"]["shards"] == 2 for r in responses)
    assert all(len(k) > 0 for k in one)
