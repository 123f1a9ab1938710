"""Ingestion end to end on a real local Ray, real LanceDB and the tiny ColQwen2: row counts,
idempotence, changed files, kill-and-resume, bad input, deletion, the CLI's JSON."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmrag.config import load_config
from mmrag.store import LanceStore
from mmrag.store import schema as S

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"


def _one(pattern: str) -> Path:
    found = sorted(DATA.glob(pattern))
    assert found, f"tests/data has no {pattern}"
    return found[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small real corpus plus broken files, in a fresh directory."""
    import numpy as np
    from PIL import Image, ImageDraw

    d = tmp_path_factory.mktemp("corpus")
    files = {"pdf": d / "coin.pdf", "video": d / "clip.mp4"}
    shutil.copy(_one("*.pdf"), files["pdf"])
    shutil.copy(_one("*.mp4"), files["video"])
    img = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(img).text((20, 140), "Conditional inference permutation test", fill="black")
    files["image"] = d / "figure.png"
    img.save(files["image"])
    files["empty"] = d / "empty.pdf"
    files["empty"].write_bytes(b"")
    files["html"] = d / "error-page.pdf"
    files["html"].write_text("<html><body>404 Not Found</body></html>")
    files["truncated"] = d / "truncated.pdf"
    raw = files["pdf"].read_bytes()
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["noise"] = d / "noise.mp4"
    files["noise"].write_bytes(np.random.default_rng(0).bytes(50_000))
    return files


@pytest.fixture
def cfg(tmp_path: Path, mmrag_home: str):
    # calibration is covered by test_serve_app; here it would only add a minute per ingest
    over = {"store": {"uri": str(tmp_path / "db")}, "ingest": {"ocr": "never"}, "calibration": {"enabled": False}}
    return load_config("local-cpu", over)


def _expected_clips(video: Path, clip_s: float) -> int:
    from decord import VideoReader

    vr = VideoReader(str(video))
    duration = len(vr) / vr.get_avg_fps()
    import math

    return max(1, math.ceil(duration / clip_s - 1e-6))


def test_ingest_counts_idempotence_and_errors(ray_local, corpus: dict[str, Path], cfg) -> None:
    from mmrag.ingest.pipeline import ingest

    good = [corpus["pdf"], corpus["video"], corpus["image"]]
    bad = [corpus["empty"], corpus["html"], corpus["noise"]]
    summary = ingest([str(p) for p in good + bad], cfg, collection="docs")
    assert summary.pages == 11  # coin.pdf
    assert summary.images == 1
    assert summary.clips == _expected_clips(corpus["video"], cfg.ingest.clip_seconds)
    bad_paths = {e["path"] for e in summary.errors}
    assert {str(p.resolve()) for p in bad} <= bad_paths
    reasons = " ".join(e["reason"] for e in summary.errors)
    assert "empty" in reasons and "not a PDF, image or video" in reasons

    store = LanceStore(cfg.store.uri)
    n = summary.pages + summary.images + summary.clips
    assert store.count_items("docs") == n
    rows = store.table(S.ITEMS).to_arrow().to_pylist()
    assert len({r["id"] for r in rows}) == n
    pages = sorted(r["page"] for r in rows if r["modality"] == "page")
    assert pages == list(range(1, 12))
    text = " ".join(r["text"] for r in rows if r["modality"] == "page")
    assert "permutation" in text.lower()
    for r in rows:
        assert r["n_tokens"] == len(r["multivector"]) > 0
        assert len(r["pooled"]) == cfg.models.retriever.dim
        assert r["thumbnail"][:8] == b"\x89PNG\r\n\x1a\n"
        assert r["image"][:2] == b"\xff\xd8"
    clips = sorted((r for r in rows if r["modality"] == "clip"), key=lambda r: r["start_s"])
    assert clips[0]["start_s"] == 0
    assert all(a["end_s"] <= b["end_s"] for a, b in itertools.pairwise(clips))
    assert all(r["start_s"] <= t <= r["end_s"] + 1e-6 for r in clips for t in r["frame_ts"])
    assert len(store.errors("docs")) >= len(bad)

    items = summary.optimize["tables"][S.ITEMS]  # store upkeep ran after the run, under its lease
    assert items["fragments"][1] <= items["fragments"][0] and items["rows"][1] == store.count_items(visible_only=False)

    again = ingest([str(p) for p in good], cfg, collection="docs")
    assert again.skipped == len(good) and again.files == 0
    assert again.optimize is None  # nothing written, nothing to tidy
    assert store.count_items("docs") == n

    # a changed file replaces its rows: same path, different content (the truncated PDF)
    shutil.copy(corpus["truncated"], corpus["pdf"])
    changed = ingest([str(corpus["pdf"])], cfg, collection="docs")
    assert changed.files == 1
    pdf_rows = [r for r in store.table(S.ITEMS).to_arrow().to_pylist() if r["modality"] == "page"]
    assert len(pdf_rows) == changed.pages
    assert {r["content_hash"] for r in pdf_rows} == {
        store.current_hashes("docs", [str(corpus["pdf"])])[str(corpus["pdf"])]
    }
    shutil.copy(_one("*.pdf"), corpus["pdf"])


def test_cli_json_delete_and_kill_resume(ray_local, corpus: dict[str, Path], cfg, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MMRAG_STORE__URI": cfg.store.uri,
        "MMRAG_INGEST__OCR": "never",
        "MMRAG_CALIBRATION__ENABLED": "false",  # calibration is tested in test_serve_app
        "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
        # the killed run's writer lease then blocks the store for 20 s instead of a minute
        "MMRAG_STORE__WRITER__LEASE_TTL_S": "20",
        "MMRAG_STORE__WRITER__LEASE_RENEW_S": "5",
    }
    cmd = [sys.executable, "-m", "mmrag.cli.main", "ingest", str(corpus["pdf"]), str(corpus["video"]), "--json"]
    # kill -9 the first run as soon as rows are being written. It OCRs every page (~1 s each) so that rows
    # trickle in and the kill lands mid-document: without OCR all 12 items are published within a fraction
    # of a second of the first write, often before the kill arrives.
    slow = {**env, "MMRAG_INGEST__OCR": "always"}
    proc = subprocess.Popen(cmd, env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    store = LanceStore(cfg.store.uri)
    while time.time() < deadline and proc.poll() is None:
        if store.has_items() and store.count_items(visible_only=False) > 0:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the first run finished before it could be killed mid-write"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = time.monotonic()
    expected = 11 + _expected_clips(corpus["video"], cfg.ingest.clip_seconds)
    assert store.count_items() < expected, "the killed run should not have published everything"

    # its lease still runs: a second writer is refused, naming it, and neither writes nor deletes anything
    before = (store.count_items(), store.count_items(visible_only=False))
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-3000:]
    said = " ".join(refused.stderr.split())  # rich wraps long lines
    assert f"pid {proc.pid}/ingest" in said and "another writer" in said and "until" in said, said[-3000:]
    assert refused.stdout == ""
    assert (store.count_items(), store.count_items(visible_only=False)) == before
    time.sleep(max(0.0, killed_at + 20.5 - time.monotonic()))  # then it expires and the next run may write

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) == {"files", "pages", "images", "clips", "audio", "skipped", "errors"}
    store = LanceStore(cfg.store.uri)
    rows = store.table(S.ITEMS).to_arrow().to_pylist()
    assert store.count_items() == expected
    assert len(rows) == expected, "invisible leftovers of the killed run remain"
    assert len({r["id"] for r in rows}) == expected
    optimized = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "store", "optimize", "--json"], env=env, capture_output=True, text=True
    )
    assert optimized.returncode == 0, optimized.stderr[-3000:]
    items = json.loads(optimized.stdout)["tables"][S.ITEMS]
    assert items["fragments"][1] <= items["fragments"][0] and LanceStore(cfg.store.uri).count_items() == expected

    stats = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "stats", "--json"], env=env, capture_output=True, text=True
    )
    info = json.loads(stats.stdout)["collections"]["default"]
    assert info["items"]["page"] == 11 and info["documents"] == 2

    gone = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "delete", str(corpus["video"])],
        env=env,
        capture_output=True,
        text=True,
    )
    assert gone.returncode == 0, gone.stderr
    assert LanceStore(cfg.store.uri).count_items() == 11


def test_speech_in_a_video_and_an_audio_file_is_searchable(ray_local, cfg, tmp_path: Path) -> None:
    """espeak-ng sentences at known seconds, muxed over frames, through the Ray Data pipeline (transcription as
    its own stage) into LanceDB: a spoken phrase finds the clip that holds it, in text and default mode, and an
    audio-only file becomes audio items with their seconds."""
    from media import speech_video, speech_wav
    from mmrag.ingest.pipeline import ingest
    from mmrag.search import LocalSearcher

    video = tmp_path / "talk.mp4"
    spans = speech_video(video)  # 30 s: one sentence in each 10 s clip
    audio = tmp_path / "memo.wav"
    audio_spans = speech_wav(audio, [(3.0, "The library closes early on Friday evenings.")], duration=16.0)
    summary = ingest([str(video), str(audio)], cfg, collection="talks")
    assert summary.errors == [] and summary.clips == 3 and summary.audio == 2

    searcher = LocalSearcher(cfg, reranker=None)
    for (start, end, sentence), mode in itertools.product(spans, ("text", None)):
        phrase = " ".join(sentence.rstrip(".").split()[-3:])  # "is sunny today", "the garden plants", ...
        top = searcher.search(phrase, k=3, collection="talks", mode=mode)[0]
        assert top["source_uri"].endswith("talk.mp4") and top["modality"] == "clip", (phrase, mode, top)
        assert top["start_s"] <= start and end <= top["end_s"] + 0.5, (phrase, mode, top)
    top = searcher.search("library closes early", k=3, collection="talks", mode="text")[0]
    assert top["modality"] == "audio" and top["source_uri"].endswith("memo.wav")
    assert top["start_s"] <= audio_spans[0][0] and audio_spans[0][1] <= top["end_s"] + 0.5
    rows = LanceStore(cfg.store.uri).table(S.ITEMS).to_arrow().to_pylist()
    texts = {(r["modality"], r["start_s"]): r["text"].lower() for r in rows}
    assert (
        "sunny" in texts[("clip", 0.0)] and "garden" in texts[("clip", 10.0)] and "sunny" not in texts[("clip", 10.0)]
    )
    assert "library" in texts[("audio", 0.0)] and texts[("audio", 10.0)] == ""  # silence: no words made up
