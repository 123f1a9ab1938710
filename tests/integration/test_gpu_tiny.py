"""The gpu profile's code paths on CPU: the gpu-tiny profile (gpu.yaml with tiny ColQwen2.5 and Qwen2.5-VL stand-ins,
CPU placement) deployed as one app for the module: its deployment graph with the gpu profile's autoscaling, uploads
embedded by a ColQwen2.5 loaded as a PEFT adapter over its base, search, and answers streamed by Qwen2.5-VL on
vLLM with the retrieved images in the prompt at the gpu profile's image size.

Only what CI needs is overridden: a free port, the store under the test's directory, no OCR and no calibration (each
costs seconds per item on 2 cores and is covered elsewhere), and a 1 s drain so that shutdown does not wait 30 s.
The models' outputs are noise: the tests check structure and counts, never words."""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

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
        return int(s.getsockname()[1])


def _png(w: int, h: int, color: str) -> bytes:
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    for i in range(4):
        draw.rectangle((40 + 120 * i, h - 60 - 90 * i, 130 + 120 * i, h - 40), fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


#: Two pictures with no text at all (and OCR off): a prompt over them is the instructions, labels, question and
#: the images, so the engine's prompt token count shows whether the images reached it, and at what size.
PICTURES = {"bars.png": _png(900, 700, "navy"), "columns.png": _png(640, 1000, "darkred")}


def _wait(url: str, headers: dict, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish in {timeout_s} s: {job}")


@pytest.fixture(scope="module")
def app(ray_local, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    from ray import serve

    from mmrag.serve.run import run_app

    d = tmp_path_factory.mktemp("gpu-tiny")
    db = str(d / "db")
    cfg = load_config(
        "gpu-tiny",
        {
            "store": {"uri": db},
            "server": {"port": _free_port(), "drain_s": 1},
            "ingest": {"ocr": "never"},
            "calibration": {"enabled": False},
            "ingestor": {"staging_dir": str(d / "staging")},
        },
    )
    keys = ["keys", "create", "--db", db, "--json", "-c", "docs", "-c", "pics", "--scope", "write", "--name", "ci"]
    out = subprocess.run([sys.executable, "-m", "mmrag.cli.main", *keys], capture_output=True, text=True, check=True)
    headers = {"Authorization": f"Bearer {json.loads(out.stdout)['key']}"}
    t0 = time.monotonic()
    url = run_app(cfg)
    started = time.monotonic() - t0

    def upload(collection: str, files: dict[str, bytes]) -> dict:
        parts = [("files", (n, b, "application/octet-stream")) for n, b in files.items()]
        r = httpx.post(f"{url}/v1/collections/{collection}/documents", files=parts, headers=headers, timeout=120)
        assert r.status_code == 202, r.text
        return r.json()

    t0 = time.monotonic()
    jobs = [
        upload("docs", {n: (DATA / n).read_bytes() for n in ("coin.pdf", "cup.mp4")}),
        upload("pics", PICTURES),
    ]
    jobs = [_wait(url, headers, j["id"]) for j in jobs]
    # a finished job is published; each retriever replica picks it up on its next index refresh
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.post(
            f"{url}/v1/search", json={"query": "x", "k": 5, "collection": "pics", "mode": "visual"}, headers=headers
        )
        if r.status_code == 200 and len(r.json()["results"]) == len(PICTURES):
            break
        time.sleep(0.5)
    print(f"\ngpu-tiny app ready in {started:.1f} s, uploads ingested in {time.monotonic() - t0:.1f} s")
    yield {"url": url, "cfg": cfg, "headers": headers, "jobs": jobs}
    serve.shutdown()


def _post(app: dict, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{app['url']}{path}", json=body, headers=app["headers"], timeout=300)


def _stream_answer(app: dict, body: dict) -> list[tuple[str, dict]]:
    events, event = [], None
    with httpx.stream(
        "POST", f"{app['url']}/v1/answer", json={**body, "stream": True}, headers=app["headers"], timeout=300
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    return events


# ---------------------------------------------------------------------------------------------------- tests
def test_the_gpu_deployment_graph_runs_with_its_autoscaling_on_cpu(app) -> None:
    from ray.serve.context import _get_global_client

    from mmrag import constants

    cfg = app["cfg"]
    details = _get_global_client().get_serve_details()
    deployments = details["applications"][constants.APP_NAME]["deployments"]
    wanted = {
        constants.GATEWAY_DEPLOYMENT: cfg.gateway,
        constants.RETRIEVER_DEPLOYMENT: cfg.retriever,
        constants.RERANKER_DEPLOYMENT: cfg.reranker,
        constants.GENERATOR_DEPLOYMENT: cfg.generator,
        constants.INGESTOR_DEPLOYMENT: cfg.ingestor,
    }
    assert set(deployments) == set(wanted)
    for name, dep_cfg in wanted.items():
        live = deployments[name]
        assert live["status"] == "HEALTHY", (name, live["message"])
        scaling = live["deployment_config"]["autoscaling_config"]
        expected = dep_cfg.autoscaling
        assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (
            expected.min_replicas,
            expected.max_replicas,
            expected.target_ongoing_requests,
        ), name
        running = [r for r in live["replicas"] if r["state"] == "RUNNING"]
        assert len(running) >= expected.min_replicas, name
        assert live["deployment_config"]["ray_actor_options"].get("num_gpus", 0) == 0, name
    # the gateway runs the gpu profile's two replicas at least
    assert len([r for r in deployments[constants.GATEWAY_DEPLOYMENT]["replicas"] if r["state"] == "RUNNING"]) >= 2
    # vLLM's placement group: CPU bundles only (gpu: a GPU per engine worker)
    from ray.util import placement_group_table

    groups = [g for g in placement_group_table().values() if constants.GENERATOR_DEPLOYMENT in (g.get("name") or "")]
    assert groups, [g.get("name") for g in placement_group_table().values()]
    for g in groups:
        bundles = list(g["bundles"].values())
        assert bundles and not any(b.get("GPU") for b in bundles), bundles


def test_uploads_are_embedded_by_colqwen2_5_at_the_gpu_profiles_page_size(app) -> None:
    """Each picture became one item whose token vectors are ColQwen2.5's for the image bounded by the profile's
    max_image_pixels (768 visual tokens at most, as on the gpu profile), not by the checkpoint's own 12.8 MP."""
    from colpali_engine.models import ColQwen2_5_Processor
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from mmrag.imaging import fit_pixels
    from mmrag.store import LanceStore

    cfg = app["cfg"]
    docs, pics = app["jobs"]
    assert docs["state"] == "done" and pics["state"] == "done", app["jobs"]
    by_name = {f["name"]: f for f in docs["files"]}
    assert by_name["coin.pdf"]["items"] == 11 and by_name["cup.mp4"]["items"] >= 1
    assert [f["items"] for f in pics["files"]] == [1, 1]

    r = _post(app, "/v1/search", {"query": "bars", "k": 5, "collection": "pics", "mode": "visual"})
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["results"]]
    rows = LanceStore(cfg.store.uri).get_items(ids, ["source_uri", "n_tokens", "model_id"])
    assert sorted(row["source_uri"] for row in rows.values()) == sorted(f"upload:{n}" for n in PICTURES)
    tok = AutoTokenizer.from_pretrained(cfg.models.resolve(cfg.models.retriever.model))
    prompt = len(tok(ColQwen2_5_Processor.visual_prompt_prefix, add_special_tokens=False)["input_ids"])
    cap = cfg.models.retriever.max_image_pixels
    for row in rows.values():
        image = Image.open(io.BytesIO(PICTURES[row["source_uri"].removeprefix("upload:")]))
        w, h = fit_pixels(image, cap).size  # what ingestion hands the encoder
        rh, rw = smart_resize(h, w, factor=28, min_pixels=56 * 56, max_pixels=cap)
        assert row["n_tokens"] == rh * rw // (28 * 28) + prompt - 1, row
        assert 600 < row["n_tokens"] - prompt < 769
        assert "colqwen2.5" in row["model_id"]


@pytest.mark.parametrize("mode", ["visual", "hybrid"])
def test_search_scores_with_colqwen2_5(app, mode: str) -> None:
    r = _post(app, "/v1/search", {"query": "permutation test", "k": 5, "collection": "docs", "mode": mode})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert 0 < len(hits) <= 5
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert {h["modality"] for h in hits} <= {"page", "clip"}
    if mode == "visual":  # exact MaxSim over ColQwen2.5's token vectors
        assert all("maxsim" in h["scores"] for h in hits)


def test_images_reach_qwen2_5_vl_at_the_gateways_size(app) -> None:
    """Over text-free pictures, the engine's prompt token count is the images' visual tokens (one per 28 x 28
    pixels of the size the gateway chose for image_max_pixels) plus a little text: the images were in the prompt,
    and vLLM's Qwen2.5-VL processor did not resize them."""
    from mmrag.imaging import IMAGE_UNIT, fit_image_size

    g = app["cfg"].models.generator
    body = {"query": "Which colour are the bars?", "k": 2, "collection": "pics", "mode": "visual", "max_tokens": 6}
    events = _stream_answer(app, body)
    kinds = [e for e, _ in events]
    assert kinds[-2:] == ["citations", "done"] and kinds.count("token") >= 1
    cites = events[-2][1]["citations"]
    assert sorted(c["source"] for c in cites) == sorted(f"upload:{n}" for n in PICTURES)
    visual = 0
    for c in cites:
        r = httpx.get(f"{app['url']}/v1/items/{c['id']}/image", headers=app["headers"], timeout=30)
        assert r.status_code == 200
        w, h = fit_image_size(*Image.open(io.BytesIO(r.content)).size, g.image_max_pixels)
        visual += (w // IMAGE_UNIT) * (h // IMAGE_UNIT)
    usage = events[-1][1]["usage"]
    text_tokens = usage["prompt_tokens"] - visual
    assert 50 < text_tokens < 400, (usage, visual)  # instructions, two labels, the question: no room for a 3rd image
    assert 1 <= usage["completion_tokens"] <= 6


def test_a_streamed_answer_over_pdf_pages_cites_them(app) -> None:
    from mmrag.store import LanceStore

    cfg = app["cfg"]
    g = cfg.models.generator
    body = {"query": "Which test statistics does coin provide?", "k": 3, "collection": "docs", "max_tokens": 8}
    events = _stream_answer(app, body)
    kinds = [e for e, _ in events]
    assert kinds[-2:] == ["citations", "done"] and kinds.count("token") >= 1
    done, cites = events[-1][1], events[-2][1]["citations"]
    assert [c["n"] for c in cites] == [1, 2, 3]
    rows = LanceStore(cfg.store.uri).get_items([c["id"] for c in cites], ["source_uri", "page"])
    assert all(rows[c["id"]]["source_uri"] == c["source"] and rows[c["id"]]["page"] == c["page"] for c in cites)
    usage = done["usage"]
    assert 1 <= usage["completion_tokens"] <= 8
    # three ~1 MP pages at ~1280 visual tokens each, then text up to the budget the gateway counted exactly
    assert 3 * 1000 < usage["prompt_tokens"] <= g.max_model_len - 8
    assert 0 < done["timings"]["ttft"] <= done["timings"]["total"]


def test_the_gpu_checks_answer_step_measures_this_app(app) -> None:
    """benchmarks/gpu_check.py's answer step (its CPU fallback in test_gpu_check.py skips it) on this app: streamed
    answers from the tiny Qwen2.5-VL, timed, each citing what it was given."""
    from benchmarks.gpu_check import measure_answers

    with httpx.Client(headers=app["headers"], timeout=300) as client:
        got = measure_answers(client, app["url"], 2, collection="docs")
    assert got["answers"] == 2 and got["citations_per_answer"] >= 1
    assert 0 < got["ttft_p50_ms"] <= got["ttft_p99_ms"] and got["ttft_p50_ms"] <= got["total_p50_ms"]
