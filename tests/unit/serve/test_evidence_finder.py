"""Evidence on real rows: the bundled PDF and video ingested with the tiny ColQwen2 into a real LanceDB, then
regions for pages and clip frames from the stored multivectors (no re-embedding), and the rendered view."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrag.config import load_config

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def finder(tmp_path_factory: pytest.TempPathFactory, mmrag_home: str):
    from mmrag.ingest.pipeline import ingest
    from mmrag.ingest.warm import WarmStages
    from mmrag.serve.evidence import TINY_NOTE, EvidenceFinder
    from mmrag.store import LanceStore

    d = tmp_path_factory.mktemp("evidence")
    for name in ("coin.pdf", "cup.mp4"):
        shutil.copy(DATA / name, d / name)
    over = {"ingest": {"ocr": "never"}, "store": {"uri": str(d / "db")}, "models": {"text": None}}
    cfg = load_config("local-cpu", over)
    warm = WarmStages(cfg)
    store = LanceStore.from_config(cfg.store)
    ingest([str(d / "coin.pdf"), str(d / "cup.mp4")], cfg, collection="c", store=store, calibrate=False,
           optimize=False, runner=warm)  # fmt: skip
    rows = store.table("items").search().select(["id", "modality", "text", "n_tokens", "frame_ts"]).to_list()
    return EvidenceFinder(warm.embed.encoder, store, note=TINY_NOTE), rows, d


def test_pages_and_clip_frames_get_a_few_regions_from_the_stored_vectors(finder) -> None:
    ef, rows, _ = finder
    assert ef.layout is not None and ef.layout.prefix == 4 and ef.layout.suffix == 10
    q = ef.encoder.embed_queries(["coin toss probability"])[0]
    got = ef.find("coin toss probability", q, rows)
    assert set(got) == {r["id"] for r in rows}
    for r in rows:
        ev = got[r["id"]]
        assert ev["method"] == "maxsim" and ev["note"] and 0 <= ev["patch_share"] <= 1
        rows_, cols = ev["grid"]
        n_frames = len(r["frame_ts"]) if r["modality"] == "clip" else 1
        assert n_frames * (4 + rows_ * cols + 10) == r["n_tokens"]  # the grid accounts for every token
        assert 1 <= len(ev["regions"]) <= 4 * n_frames
        for g in ev["regions"]:
            assert 0 <= g["x0"] < g["x1"] <= 1 and 0 <= g["y0"] < g["y1"] <= 1 and 0 < g["score"] <= 1
            if r["modality"] == "clip":
                assert g["frame"] in range(n_frames) and g["t_s"] == pytest.approx(r["frame_ts"][g["frame"]])
            else:
                assert g["frame"] is None and g["t_s"] is None
        # the query's words in the snippet (the page's own text layer)
        snippet = (r["text"] or "")[:300]
        for s, e in ev["highlights"]:
            assert snippet[s:e].lower().startswith(("coin", "toss", "proba"))
    assert ef.last_ms > 0


def test_without_a_visual_query_only_the_words_are_marked(finder) -> None:
    ef, rows, _ = finder
    page = next(r for r in rows if r["modality"] == "page" and "coin" in (r["text"] or "")[:300].lower())
    ev = ef.find("coin", None, [page])[page["id"]]
    assert ev["method"] == "text" and ev["regions"] == [] and ev["highlights"]


def test_the_evidence_view_draws_the_regions_on_the_page() -> None:
    from PIL import Image

    from mmrag.serve.media import draw_regions

    buf = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buf, "JPEG")
    out = Image.open(io.BytesIO(draw_regions(buf.getvalue(), [{"x0": 0.5, "y0": 0.5, "x1": 1.0, "y1": 1.0,
                                                              "score": 0.5}])))  # fmt: skip
    px = np.asarray(out)
    assert px[10, 10].min() > 240  # outside the box: untouched
    assert px[75, 150, 2] < 230  # inside: tinted


def test_the_source_video_is_served_only_while_it_is_unchanged(finder, tmp_path) -> None:
    from mmrag.serve.media import ranged_file, source_file

    _, _, d = finder
    import hashlib

    video = tmp_path / "v.mp4"
    shutil.copy(d / "cup.mp4", video)
    row = {"source_uri": str(video), "content_hash": hashlib.sha256(video.read_bytes()).hexdigest()}
    assert source_file(row) == video
    r = ranged_file(video, "bytes=100-199")
    assert r.status_code == 206 and len(r.body) == 100 and r.headers["content-range"].startswith("bytes 100-199/")
    assert ranged_file(video, f"bytes={video.stat().st_size + 5}-").status_code == 416
    video.write_bytes(b"changed")
    assert source_file(row) is None
    assert source_file({"source_uri": "upload:v.mp4", "content_hash": row["content_hash"]}) is None
