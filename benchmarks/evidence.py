"""Evidence benchmark: what ``evidence: true`` costs per page, and that asking nothing costs nothing.

    python -m benchmarks.evidence [--queries 40] [--k 5] [--out benchmarks/results/evidence.json]

In one process (no Serve: the numbers are the work the retriever replica does, without the network hop):

``store``       the test data (tests/data: an 11-page PDF and a short video) ingested with
                the local-cpu models (tiny ColQwen2) into a fresh LanceDB;
``search``      each query's visual search alone (encoder + cascade): what a request without ``evidence`` runs — the
                evidence code is behind ``if req.evidence`` in the gateway, so that is all it pays;
``evidence``    :class:`mmrag.serve.evidence.EvidenceFinder` over the same hits (one store read of their multivectors
                and sizes, the per-patch MaxSim heat, the boxes, the snippet highlights), per hit (page or clip);
``maths_real``  the heat and boxes alone for a page of the real model's size (``vidore/colqwen2.5-v0.2``: 768 patch
                tokens, 128 dims, a 20-token query), on random vectors: the maths does not depend on what they mean.

Results: JSON and a Markdown summary beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    "coin toss probability",
    "permutation test",
    "a cup on a table",
    "table of p-values",
    "conditional inference",
    "asymptotic distribution",
    "exact test for independence",
    "the number of heads",
    "hypergeometric distribution",
    "a white mug",
]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def run(n_queries: int, k: int) -> dict[str, Any]:
    from mmrag.config import load_config
    from mmrag.ingest.pipeline import ingest
    from mmrag.ingest.warm import WarmStages
    from mmrag.models import evidence as E
    from mmrag.serve.evidence import TINY_NOTE, EvidenceFinder
    from mmrag.store import LanceStore
    from mmrag.store.search import SearchFilters, SearchIndex, SearchQuery

    d = Path(tempfile.mkdtemp(prefix="mmrag-evidence-"))
    try:
        for name in ("coin.pdf", "cup.mp4"):
            shutil.copy(ROOT / "tests" / "data" / name, d / name)
        over = {"ingest": {"ocr": "never"}, "store": {"uri": str(d / "db")}, "models": {"text": None}}
        cfg = load_config("local-cpu", over)
        warm = WarmStages(cfg)
        store = LanceStore.from_config(cfg.store)
        ingest([str(d / "coin.pdf"), str(d / "cup.mp4")], cfg, collection="c", store=store, calibrate=False,
               optimize=False, runner=warm)  # fmt: skip
        encoder = warm.embed.encoder
        index = SearchIndex.from_store(store, cfg.retriever.index_config())
        finder = EvidenceFinder(encoder, store, note=TINY_NOTE)
        kinds = store.table("items").search().select(["modality", "frame_ts"]).limit(None).to_list()
        n_pages = sum(r["modality"] == "page" for r in kinds)
        clips = [len(r["frame_ts"] or []) for r in kinds if r["modality"] == "clip"]
        search_ms, ev_ms, per_hit_ms, regions = [], [], [], []
        for i in range(n_queries + 3):
            q = QUERIES[i % len(QUERIES)]
            t0 = time.perf_counter()
            qmv = encoder.embed_queries([q])[0]
            sq = SearchQuery("visual", qmv, q, k, SearchFilters(collection="c"), first_stage_k=max(k, 64), rrf_k=60)
            hits = [h.to_dict() for h in index.search_many([sq])[0]]
            t1 = time.perf_counter()
            got = finder.find(q, qmv, hits)
            t2 = time.perf_counter()
            if i < 3:  # warm-up: first store reads, first torch calls
                continue
            search_ms.append((t1 - t0) * 1e3)
            ev_ms.append((t2 - t1) * 1e3)
            per_hit_ms.append((t2 - t1) * 1e3 / max(1, len(hits)))
            regions += [len(e["regions"]) for e in got.values() if e["method"] == "maxsim"]
        # the maths alone at the real model's page size
        rng = np.random.default_rng(0)
        layout = finder.layout
        assert layout is not None
        n_patch, dim = 768, 128
        rows, cols = 32, 24  # 768 tokens of a portrait page
        doc = rng.normal(size=(layout.prefix + n_patch + layout.suffix, dim)).astype(np.float32)
        doc /= np.linalg.norm(doc, axis=1, keepdims=True)
        qv = rng.normal(size=(20 + layout.query_suffix, dim)).astype(np.float32)
        qv /= np.linalg.norm(qv, axis=1, keepdims=True)
        width, height = cols * layout.factor * 3, rows * layout.factor * 3
        big = E.TokenLayout(**{**layout.__dict__, "max_pixels": n_patch * layout.factor**2})
        maths = []
        for _ in range(60):
            t0 = time.perf_counter()
            out = E.item_regions(qv, doc, width=width, height=height, n_frames=1, layout=big)
            maths.append((time.perf_counter() - t0) * 1e3)
        assert out is not None and out["grid"] == [rows, cols]
        return {
            "pages": n_pages,
            "clips": len(clips),
            "frames_per_clip": max(clips or [0]),
            "queries": n_queries,
            "k": k,
            "search_ms": {"p50": _pct(search_ms, 50), "p90": _pct(search_ms, 90)},
            "evidence_ms_per_request": {"p50": _pct(ev_ms, 50), "p90": _pct(ev_ms, 90)},
            "evidence_ms_per_page": {"p50": _pct(per_hit_ms, 50), "p90": _pct(per_hit_ms, 90)},
            "regions_per_item": {"mean": float(np.mean(regions)) if regions else 0.0, "max": max(regions or [0])},
            "maths_real_size_ms_per_page": {"p50": _pct(maths[10:], 50), "p90": _pct(maths[10:], 90)},
            "evidence_off_extra_ms": 0.0,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def markdown(res: dict[str, Any], command: str, meta: dict[str, Any]) -> str:
    r = res
    rows = [
        ("search without evidence (encode + cascade)", r["search_ms"]),
        (f"evidence for the {r['k']} hits (one store read + maths + highlights)", r["evidence_ms_per_request"]),
        ("**evidence per page (or clip)**", r["evidence_ms_per_page"]),
        (
            "heat + boxes alone for one page of the real model's size (768 patches x 128, 20-token query)",
            r["maths_real_size_ms_per_page"],
        ),
    ]
    table = "\n".join(f"| {name} | {v['p50']:.2f} | {v['p90']:.2f} |" for name, v in rows)
    store = f"{r['pages']} PDF pages, {r['clips']} clip(s) of {r['frames_per_clip']} frames"
    return f"""# Evidence regions: cost

`{command}` on {meta["at"]}: {meta["cpus"]} CPUs, Python {meta["python"]}. Shared, loaded machine: timings are upper
bounds. One process, no Serve (the retriever replica's work, without the network hop).

Store: the test data ({store}) with the tiny ColQwen2; {r["queries"]} visual searches, k = {r["k"]}.

| what | p50 ms | p90 ms |
|---|---:|---:|
{table}

- With `evidence` off (the default) nothing of this runs: the gateway calls the retriever's `evidence` method only
  under `if req.evidence`, so the cost is 0 ms by construction (`evidence_off_extra_ms`).
- In `/v1/answer` and chat the evidence runs beside the generator (started when the prompt is ready, awaited for the
  `citations` event), so it adds nothing to the time to first token while it is shorter than the answer.
- Regions per page or clip: {r["regions_per_item"]["mean"]:.1f} on average, at most {r["regions_per_item"]["max"]}
  (at most 4 per page or frame). With the tiny random retriever they are noise; the code path is the real one.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/evidence.json")
    args = ap.parse_args(argv)
    command = "python -m benchmarks.evidence " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "command": command.strip(),
    }
    res = run(args.queries, args.k)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, **res}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(res, meta["command"], meta))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
