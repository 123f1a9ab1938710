"""Searches while ingestion adds 1,000 pages: search latency against idle, replica restarts, pages searchable as they
publish (issue #21).

    python -m benchmarks.ingest_under_load [--pages 1000] [--clients 8] [--idle 40] [--per-upload 10]

Deploys the local-cpu app (search only: no generator) on a local Ray with a store holding the test paper, then:

1. **idle**: ``--clients`` closed-loop clients search the collection for ``--idle`` seconds (the baseline p50/p99);
2. **ingesting**: the same clients keep searching while ``--pages`` pages arrive through the ingestion API, as
   10-page PDFs (pages of tests/data/coin.pdf, each with two made-up words of its own on its first page) uploaded
   ``--per-upload`` files at a time, one upload after the other finishes (the service's queue runs them in order);
   after each job, each of its documents is searched for by its own words until found, which times "searchable as
   it publishes" (from the job's end; the job publishes each document as soon as it is embedded);
3. the Serve replicas' actor names before and after tell whether any replica was restarted.

Targets (issue #21): search p99 while ingesting ≤ 1.5× the idle p99; no replica restart; every new page searchable.
Writes benchmarks/results/ingest_under_load.json and .md.
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

import httpx
import numpy as np

from benchmarks.freshness import COLLECTION, ROOT, SearchLoad, _found, _p, _wait, make_pdfs
from benchmarks.search_http import _free_port

INCOMING = "incoming"


def _found_in(c: httpx.Client, url: str, collection: str, query: str, source: str) -> bool:
    r = c.post(f"{url}/v1/search", json={"query": query, "collection": collection, "k": 5, "mode": "text"})
    return r.status_code == 200 and any(h["source"] == source for h in r.json()["results"])


def _replicas() -> list[str]:
    """Serve replica actors alive now, by name (a restarted replica comes back under a new name)."""
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA")
    )


def _phase(load: SearchLoad, since: int) -> dict[str, Any]:
    lat = np.asarray(load.latencies[since:])
    return {
        "searches": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
    }


def markdown(r: dict[str, Any]) -> str:
    idle, busy, after = r["idle"], r["ingesting"], r["idle_after"]
    ing = r["ingestion"]
    where = (
        f"into another collection ({r['into']!r}) than the one searched ({r['searched_collection_pages']} pages, "
        "the same size in every phase)"
        if r["into"] != COLLECTION
        else f"into the searched collection ({r['searched_collection_pages']} pages at the start, growing)"
    )
    lines = [
        "# Searches while ingestion adds pages (local-cpu, ingestion service)",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']['cpus']} CPUs, no GPU; load average {r['machine']['loadavg_at_start']} at start",
        f"- app: local-cpu, search only (no generator), one replica each, ingestion through "
        f"`POST /v1/collections/{{name}}/documents`; {r['clients']} closed-loop search clients throughout",
        f"- ingested: {ing['pages']} pages in {ing['documents']} PDFs, {ing['uploads']} uploads of "
        f"{r['per_upload']} files, {where}, in {ing['seconds']:.0f} s ({ing['pages'] / ing['seconds']:.1f} pages/s "
        "under search load)",
        "",
        "| phase | searches | p50 | p99 | errors |",
        "|---|---:|---:|---:|---|",
        f"| idle ({r['idle_s']:.0f} s) | {idle['searches']} | {idle['p50_ms']:.0f} ms | {idle['p99_ms']:.0f} ms | "
        f"{idle.get('errors') or 'none'} |",
        f"| ingesting ({ing['seconds']:.0f} s) | {busy['searches']} | {busy['p50_ms']:.0f} ms | "
        f"{busy['p99_ms']:.0f} ms | {busy.get('errors') or 'none'} |",
        f"| idle again ({r['idle_s']:.0f} s) | {after['searches']} | {after['p50_ms']:.0f} ms | "
        f"{after['p99_ms']:.0f} ms | {after.get('errors') or 'none'} |",
        "",
        f"Job end -> document found by its own words: p50 {ing['found_after_job_p50_s']:.2f} s, max "
        f"{ing['found_after_job_max_s']:.2f} s over {ing['documents']} documents ({len(ing['never_found'])} never "
        "found).",
        f"Replicas before: {len(r['replicas_before'])}, after: {len(r['replicas_after'])}, restarted: "
        f"{r['restarted'] or 'none'}.",
        "",
        "## Targets",
        "",
    ]
    for t in r["targets"]:
        lines.append(f"- **{'MET' if t['met'] else 'MISSED'}** {t['rule']}: {t['value']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=1000, help="pages to ingest (in 10-page PDFs)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--idle", type=float, default=40.0, help="seconds of the idle baseline")
    ap.add_argument("--per-upload", type=int, default=10, help="PDFs per upload request")
    ap.add_argument(
        "--preload", type=int, default=200, help="pages in the searched collection before the clients start"
    )
    ap.add_argument(
        "--into",
        choices=["other", "searched"],
        default="other",
        help="ingest into another collection than the searched one (default: the searched collection's size stays "
        "the same, so the phases compare like with like), or into the searched one (it grows as it is searched)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/ingest_under_load.json"))
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from mmrag.config import load_config
    from mmrag.serve.run import run_app

    tmp = Path(tempfile.mkdtemp(prefix="mmrag-ingest-load-"))
    pdfs = make_pdfs(max(1, args.pages // 10), seed=21)
    preload = [(f"pre-{n}", d, w) for n, d, w in make_pdfs(max(0, args.preload // 10), seed=5)]
    load_start = [round(x, 2) for x in os.getloadavg()]
    cfg = load_config(
        "local-cpu",
        {
            "store": {"uri": str(tmp / "db")},
            "ingest": {"ocr": "never"},
            "server": {"port": _free_port()},
            "generator": {"engine": "none"},
            "ingestor": {"staging_dir": str(tmp / "staging")},
            **{d: {"num_replicas": 1, "autoscaling": None} for d in ("retriever", "reranker", "gateway")},
        },
    )
    url = run_app(cfg)
    into = COLLECTION if args.into == "searched" else INCOMING
    found_after: list[float] = []
    never: list[str] = []
    uploads = 0

    def upload(c: httpx.Client, collection: str, batch: list[tuple[str, bytes, str]]) -> dict[str, Any]:
        r = c.post(
            f"{url}/v1/collections/{collection}/documents",
            files=[("files", (n, d, "application/pdf")) for n, d, _ in batch],
        )
        r.raise_for_status()
        job_id = r.json()["id"]
        _wait(lambda: c.get(f"{url}/v1/jobs/{job_id}").json()["state"] in ("done", "failed"), 1800, 0.5)
        return dict(c.get(f"{url}/v1/jobs/{job_id}").json())

    with httpx.Client(timeout=120) as c:
        t0 = time.perf_counter()
        upload(c, COLLECTION, [("coin.pdf", (ROOT / "tests/data/coin.pdf").read_bytes(), "")])
        for s in range(0, len(preload), args.per_upload):
            upload(c, COLLECTION, preload[s : s + args.per_upload])
        preload_s = time.perf_counter() - t0
        _wait(lambda: _found(c, url, "conditional inference", "upload:coin.pdf"), 60)
        searched_pages = sum(
            d["items"] for d in c.get(f"{url}/v1/collections/{COLLECTION}/documents?limit=1000").json()["documents"]
        )
        print(f"  preloaded {searched_pages} pages into {COLLECTION!r} in {preload_s:.0f} s", flush=True)
        replicas_before = _replicas()
        with SearchLoad(url, args.clients) as load:
            time.sleep(3)  # clients connected and warm
            mark = len(load.latencies)
            time.sleep(args.idle)
            idle = {**_phase(load, mark), "errors": dict(load.errors)}
            mark = len(load.latencies)
            errors_before = dict(load.errors)
            t_ingest = time.perf_counter()
            for s in range(0, len(pdfs), args.per_upload):
                batch = pdfs[s : s + args.per_upload]
                job = upload(c, into, batch)
                uploads += 1
                t_done = time.perf_counter()
                for name, _, words in batch:
                    got = _wait(lambda: _found_in(c, url, into, words, f"upload:{name}"), 30)  # noqa: B023
                    if got is None:
                        never.append(name)
                    else:
                        found_after.append(time.perf_counter() - t_done)
                print(
                    f"  upload {uploads}: {job['state']}, {job['counts'].get('pages')} pages, "
                    f"{time.perf_counter() - t_ingest:.0f} s so far",
                    flush=True,
                )
            ingest_s = time.perf_counter() - t_ingest
            busy = _phase(load, mark)
            busy["errors"] = {
                k: v - errors_before.get(k, 0) for k, v in load.errors.items() if v > errors_before.get(k, 0)
            }
            errors_before = dict(load.errors)
            mark = len(load.latencies)
            time.sleep(args.idle)
            after = _phase(load, mark)
            after["errors"] = {
                k: v - errors_before.get(k, 0) for k, v in load.errors.items() if v > errors_before.get(k, 0)
            }
        replicas_after = _replicas()
        listing = c.get(f"{url}/v1/collections/{into}/documents?limit=1000").json()
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    pages = sum(d["items"] for d in listing["documents"] if d["name"].startswith("fresh-"))
    restarted = sorted(set(replicas_before) - set(replicas_after))
    result: dict[str, Any] = {
        "benchmark": "ingest_under_load",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.ingest_under_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "loadavg_at_start": load_start},
        "clients": args.clients,
        "per_upload": args.per_upload,
        "idle_s": args.idle,
        "into": into,
        "searched_collection_pages": searched_pages,
        "preload_s": preload_s,
        "idle": idle,
        "ingesting": busy,
        "idle_after": after,
        "ingestion": {
            "pages": pages,
            "documents": len(pdfs),
            "uploads": uploads,
            "seconds": ingest_s,
            "found_after_job_p50_s": _p(found_after, 50) or float("nan"),
            "found_after_job_max_s": max(found_after) if found_after else float("nan"),
            "never_found": never,
        },
        "replicas_before": replicas_before,
        "replicas_after": replicas_after,
        "restarted": restarted,
    }
    ratio = (busy["p99_ms"] or 1e9) / (idle["p99_ms"] or 1e-9)
    result["targets"] = [
        {
            "rule": "search p99 while ingesting ≤ 1.5× the idle p99",
            "value": f"{busy['p99_ms']:.0f} ms vs {idle['p99_ms']:.0f} ms idle ({ratio:.2f}×)",
            "met": ratio <= 1.5 and not busy["errors"],
        },
        {
            "rule": "no replica restart",
            "value": f"{len(restarted)} restarted",
            "met": not restarted and len(replicas_after) == len(replicas_before),
        },
        {
            "rule": f"every new page searchable ({args.pages} asked)",
            "value": f"{pages} pages stored, {len(pdfs) - len(never)}/{len(pdfs)} documents found by their words",
            "met": pages >= args.pages and not never,
        },
    ]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
