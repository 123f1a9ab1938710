"""Freshness: how soon an upload is searchable, and a delete gone, on a running server under search load.

    python -m benchmarks.freshness [--uploads 20] [--deletes 5] [--clients 4]

Deploys the local-cpu app (search only: no generator) on a local Ray with an empty store, then, while ``--clients``
closed-loop clients search the collection without pause, uploads ``--uploads`` 10-page PDFs one after another
through ``POST /v1/collections/{name}/documents``. Each PDF is pages 1-10 of the test paper (tests/data/coin.pdf)
with a line of two made-up words added to its first page; after the upload starts, ``/v1/search`` is asked for those
words every 0.2 s until the upload's first page is a result. Then ``--deletes`` of them are deleted and searched for
until gone. The clients' searches are counted too (errors, p50/p99). Targets (issue #16): searchable within 5 s
p50 and 10 s p99 of the upload's start; deleted documents gone within 2 s; searches keep answering.
Writes benchmarks/results/freshness.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.search_http import _free_port

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "fresh"
SYLLABLES = ["ka", "lo", "mi", "ne", "pu", "ra", "si", "tu", "ve", "zo", "qa", "xe", "bi", "do", "fu", "gy"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(4))


def make_pdfs(n: int, seed: int = 7) -> list[tuple[str, bytes, str]]:
    """(file name, bytes, query) for ``n`` 10-page PDFs, each with two made-up words of its own on page 1."""
    import pymupdf

    rng = random.Random(seed)
    src = pymupdf.open(ROOT / "tests/data/coin.pdf")
    out = []
    for i in range(n):
        words = f"{_word(rng)} {_word(rng)}"
        doc = pymupdf.open()
        doc.insert_pdf(src, from_page=0, to_page=9)
        doc[0].insert_text((72, 40), f"Freshness probe: {words}", fontsize=11)
        out.append((f"fresh-{i:02d}.pdf", doc.tobytes(), words))
    return out


class SearchLoad:
    """Closed-loop clients searching the collection while uploads run."""

    QUERIES = ("permutation test", "conditional inference", "asymptotic distribution", "independence")

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=30) as c:
            n = i
            while not self._stop.is_set():
                q = self.QUERIES[n % len(self.QUERIES)]
                n += 1
                t0 = time.perf_counter()
                try:
                    r = c.post(f"{self.url}/v1/search", json={"query": q, "collection": COLLECTION, "k": 5})
                    ok = r.status_code == 200
                    key = str(r.status_code)
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                if ok:
                    self.latencies.append((time.perf_counter() - t0) * 1e3)
                else:
                    self.errors[key] = self.errors.get(key, 0) + 1
                    time.sleep(0.05)

    def __enter__(self) -> SearchLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(35)

    def stats(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies)
        return {
            "searches": int(lat.size),
            "errors": dict(self.errors),
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        }


def _found(c: httpx.Client, url: str, query: str, source: str) -> bool:
    r = c.post(f"{url}/v1/search", json={"query": query, "collection": COLLECTION, "k": 5, "mode": "text"})
    return r.status_code == 200 and any(h["source"] == source for h in r.json()["results"])


def _wait(cond: Any, timeout_s: float, every_s: float = 0.2) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if cond():
            return time.perf_counter() - t0
        time.sleep(every_s)
    return None


def _p(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def _stage_lines(timings: list[dict[str, float]]) -> list[str]:
    """Median job stage timings: when the documents were published, and how long their text vectors took after."""
    keys = [
        k
        for k in ("first_publish", "read", "embed", "text_embed", "calibrate", "run_s")
        if any(k in t for t in timings)
    ]
    if not keys:
        return []
    med = {k: float(np.median([t[k] for t in timings if k in t])) for k in keys}
    return [
        "Jobs' stage timings (medians): " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()) + ". A job publishes "
        "its documents at first_publish (searchable by keywords and pictures from the next index refresh); their "
        "dense text vectors follow text_embed later; calibration runs after both.",
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    def s(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f} s"

    up, de, ld = r["uploads"], r["deletes"], r["search_load"]
    lines = [
        "# Freshness: uploads searchable, deletes gone, on a running local-cpu server under search load",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']['cpus']} CPUs, no GPU; load average {r['machine']['loadavg_at_start']} at start",
        f"- app: local-cpu, search only (no generator), auth none, one replica each; {r['clients']} closed-loop "
        "search clients the whole time",
        f"- uploads: {len(up['seconds'])} PDFs of 10 pages, one after another; each searched for every 0.2 s",
        "",
        "| what | n | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
        f"| upload start -> searchable | {len(up['seconds'])} | {s(up['p50_s'])} | {s(up['p99_s'])} | "
        f"{s(max(up['seconds']) if up['seconds'] else None)} |",
        f"| upload start -> job done | {len(up['job_seconds'])} | {s(_p(up['job_seconds'], 50))} | "
        f"{s(_p(up['job_seconds'], 99))} | {s(max(up['job_seconds']) if up['job_seconds'] else None)} |",
        f"| delete -> gone from search | {len(de['seconds'])} | {s(de['p50_s'])} | {s(de['p99_s'])} | "
        f"{s(max(de['seconds']) if de['seconds'] else None)} |",
        "",
        *_stage_lines(up.get("job_timings") or []),
        f"Search load meanwhile: {ld['searches']} searches, errors {ld['errors'] or 'none'}, p50 "
        f"{ld['p50_ms']:.0f} ms, p99 {ld['p99_ms']:.0f} ms."
        if ld["p50_ms"] is not None
        else "No search finished.",
        "",
        "## Targets",
        "",
    ]
    for t in r["targets"]:
        lines.append(f"- **{'MET' if t['met'] else 'MISSED'}** {t['rule']}: {t['value']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--deletes", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=120.0, help="give up on one upload or delete after this")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/freshness.json"))
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from mmrag.config import load_config
    from mmrag.serve.run import run_app

    tmp = Path(tempfile.mkdtemp(prefix="mmrag-freshness-"))
    pdfs = make_pdfs(args.uploads)
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
    ups: list[float] = []
    jobs: list[float] = []
    dels: list[float] = []
    misses: list[str] = []
    stages: list[dict[str, float]] = []
    with httpx.Client(timeout=120) as c:
        base = f"{url}/v1/collections/{COLLECTION}/documents"
        # a first document so the searches have something; its job also warms the ingestion path
        first = c.post(base, files=[("files", ("coin.pdf", (ROOT / "tests/data/coin.pdf").read_bytes()))]).json()
        _wait(lambda: c.get(f"{url}/v1/jobs/{first['id']}").json()["state"] in ("done", "failed"), 300, 0.5)
        _wait(lambda: _found(c, url, "conditional inference", "upload:coin.pdf"), 60)
        with SearchLoad(url, args.clients) as load:
            time.sleep(2)
            for name, data, words in pdfs:
                t0 = time.perf_counter()
                r = c.post(base, files=[("files", (name, data, "application/pdf"))])
                r.raise_for_status()
                job_id = r.json()["id"]
                got = _wait(lambda: _found(c, url, words, f"upload:{name}"), args.timeout)  # noqa: B023
                if got is None:
                    misses.append(name)
                else:
                    ups.append(time.perf_counter() - t0)
                _wait(lambda: c.get(f"{url}/v1/jobs/{job_id}").json()["state"] in ("done", "failed"), 60, 0.1)  # noqa: B023
                jobs.append(time.perf_counter() - t0)
                stages.append(c.get(f"{url}/v1/jobs/{job_id}").json().get("timings") or {})
                print(f"  {name}: searchable after {ups[-1] if got is not None else float('nan'):.2f} s", flush=True)
            listing = {d["name"]: d["doc_id"] for d in c.get(f"{base}?limit=1000").json()["documents"]}
            for name, _, words in pdfs[: args.deletes]:
                t0 = time.perf_counter()
                c.delete(f"{base}/{listing[name]}").raise_for_status()
                gone = _wait(lambda: not _found(c, url, words, f"upload:{name}"), args.timeout)  # noqa: B023
                if gone is not None:
                    dels.append(time.perf_counter() - t0)
                print(f"  delete {name}: gone after {dels[-1] if gone is not None else float('nan'):.2f} s", flush=True)
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "freshness",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.freshness " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "loadavg_at_start": load_start},
        "clients": args.clients,
        "uploads": {
            "seconds": ups,
            "job_seconds": jobs,
            "p50_s": _p(ups, 50),
            "p99_s": _p(ups, 99),
            "missed": misses,
            "job_timings": stages,
        },
        "deletes": {"seconds": dels, "p50_s": _p(dels, 50), "p99_s": _p(dels, 99)},
        "search_load": load.stats(),
    }
    ld = result["search_load"]
    result["targets"] = [
        {
            "rule": "uploads searchable within 5 s p50 and 10 s p99 of the upload's start",
            "value": f"p50 {_p(ups, 50) or float('nan'):.2f} s, p99 {_p(ups, 99) or float('nan'):.2f} s, "
            f"{len(misses)} never found",
            "met": bool(ups) and not misses and (_p(ups, 50) or 99) <= 5 and (_p(ups, 99) or 99) <= 10,
        },
        {
            "rule": "deleted documents gone from search within 2 s",
            "value": f"max {max(dels) if dels else float('nan'):.2f} s of {len(dels)}/{args.deletes}",
            "met": len(dels) == args.deletes and max(dels, default=99) <= 2,
        },
        {
            "rule": "searches keep answering (no errors)",
            "value": f"{ld['searches']} searches, errors {ld['errors'] or 'none'}",
            "met": ld["searches"] > 0 and not ld["errors"],
        },
    ]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
