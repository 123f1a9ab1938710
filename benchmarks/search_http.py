"""/v1/search throughput at 1 and at N concurrent clients, on the local-cpu app (tiny encoder).

    python -m benchmarks.search_http [--concurrency 1,32] [--requests 200] [--out benchmarks/results/search_http.json]

Ingests the test PDF and video (tests/data) into a temporary store, deploys the search app (no generator) on a
local Ray, warms it up, then for each concurrency level runs a closed loop of clients (each sends its next
request when the last one returned) and records throughput and latency percentiles. Then it redeploys with
``retriever.batch_max_size: 1`` and measures the highest concurrency again, so the gain that @serve.batch gives
is measured apart from what concurrency alone gives. Writes the JSON and a Markdown report beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    "permutation test",
    "conditional inference",
    "table of p-values",
    "a cup on a table",
    "asymptotic distribution",
    "independence of two variables",
    "figure with a histogram",
    "survival analysis",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _closed_loop(url: str, concurrency: int, n_requests: int, body: dict, client_lib: str = "aiohttp") -> dict:
    """``n_requests`` requests from ``concurrency`` clients in a closed loop; records the client's own CPU too (the
    client shares the machine with the server: httpx costs ~20x the CPU per request of aiohttp, see
    ``mmrag bench selftest``)."""
    latencies: list[float] = []
    errors = 0
    sent = 0

    async def run(i: int, post: Any) -> None:
        nonlocal sent, errors
        while sent < n_requests:
            sent += 1
            q = QUERIES[(sent + i) % len(QUERIES)]
            payload = json.dumps({**body, "query": q}).encode()
            t0 = time.perf_counter()
            status, data = await post(payload)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200 or b'"results"' not in data

    cpu0, t0 = time.process_time(), time.perf_counter()
    if client_lib == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=120), headers={"content-type": "application/json"}
        ) as session:

            async def post(payload: bytes) -> tuple[int, bytes]:
                async with session.post(f"{url}/v1/search", data=payload) as r:
                    return r.status, await r.read()

            t0 = time.perf_counter()
            await asyncio.gather(*(run(i, post) for i in range(concurrency)))
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=120, limits=limits, headers={"content-type": "application/json"}) as c:

            async def post(payload: bytes) -> tuple[int, bytes]:
                r = await c.post(f"{url}/v1/search", content=payload)
                return r.status_code, r.content

            t0 = time.perf_counter()
            await asyncio.gather(*(run(i, post) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    lat = np.array(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": wall,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)),
        "client": client_lib,
        "client_cpu_per_request_ms": cpu / max(1, len(latencies)) * 1e3,
        "client_cpu_fraction": cpu / wall,
    }


def markdown(r: dict) -> str:
    lines = [
        "# /v1/search throughput",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']['cpus']} CPUs ({r['machine']['processor']}), no GPU; load average "
        f"{[round(x, 2) for x in r['machine']['loadavg_at_start']]} at start, "
        f"{[round(x, 2) for x in r['machine']['loadavg_at_end']]} at end",
        f"- app: local-cpu profile, search only (no generator), mode {r['mode']}, k 10, rerank on; retriever "
        f"@serve.batch max {r['batching']['batch_max_size']}, wait {r['batching']['wait_s']} s, merged by the "
        f"coalescer; one replica each; ingress {r.get('ingress', '?')}; client {r['runs'][0].get('client', 'httpx')} "
        f"(its CPU per request: {max(x.get('client_cpu_per_request_ms', 0) for x in r['runs']):.2f} ms at most)",
        "",
        "| clients | retriever batch | requests | req/s | p50 ms | p90 ms | p99 ms | errors | vs first row |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run, sp in zip(r["runs"], r["speedup_vs_first"], strict=True):
        lines.append(
            f"| {run['concurrency']} | {r['batching']['batch_max_size']} | {run['requests']} | "
            f"{run['throughput_rps']:.1f} | {run['p50_ms']:.0f} | {run['p90_ms']:.0f} | {run['p99_ms']:.0f} | "
            f"{run['errors']} | {sp:.2f}x |"
        )
    u = r.get("unbatched_at_max_concurrency")
    if u:
        lines.append(
            f"| {u['concurrency']} | 1 | {u['requests']} | {u['throughput_rps']:.1f} | {u['p50_ms']:.0f} | "
            f"{u['p90_ms']:.0f} | {u['p99_ms']:.0f} | {u['errors']} | "
            f"{u['throughput_rps'] / r['runs'][0]['throughput_rps']:.2f}x |"
        )
    o = r.get("other_ingress")
    if o:
        for run in o["runs"]:
            vs_first = run["throughput_rps"] / r["runs"][0]["throughput_rps"]
            lines.append(
                f"| {run['concurrency']} (ingress {o['ingress']}) | {r['batching']['batch_max_size']} | "
                f"{run['requests']} | {run['throughput_rps']:.1f} | {run['p50_ms']:.0f} | {run['p90_ms']:.0f} | "
                f"{run['p99_ms']:.0f} | {run['errors']} | {vs_first:.2f}x |"
            )
    t = r["target"]
    lines += ["", f"**Target ({t['rule']}): {'MET' if t['met'] else 'MISSED'}** — {t['ratio']:.2f}x."]
    if u:
        lines.append(
            f"At {u['concurrency']} clients, batching whole searches (one encoder pass and one LanceDB take per "
            f"batch) gives {r['batching_gain_at_max_concurrency']:.2f}x the throughput of the same app with "
            "batch_max_size 1."
        )
    if o:
        runs = o["runs"]
        lines.append(
            f"Behind server.ingress {o['ingress']} (a fresh Ray in that mode, same app): "
            f"{runs[-1]['throughput_rps'] / runs[0]['throughput_rps']:.2f}x from {runs[0]['concurrency']} to "
            f"{runs[-1]['concurrency']} clients; ingress {r.get('ingress')} serves "
            f"{r['runs'][-1]['throughput_rps'] / runs[-1]['throughput_rps']:.2f}x its throughput at "
            f"{runs[-1]['concurrency']} clients."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--mode", default="visual", choices=["visual", "text", "hybrid"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/search_http.json"))
    ap.add_argument("--client", default="aiohttp", choices=["aiohttp", "httpx"], help="HTTP client library")
    ap.add_argument("--no-ingress-compare", action="store_true", help="skip the run behind the other server.ingress")
    ap.add_argument("--no-unbatched", action="store_true", help="skip the batch_max_size=1 comparison")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from mmrag.config import load_config
    from mmrag.ingest.pipeline import ingest
    from mmrag.serve.run import run_app

    tmp = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    for f in ("coin.pdf", "cup.mp4"):
        shutil.copy(ROOT / "tests/data" / f, tmp / f)
    over = {
        "store": {"uri": str(tmp / "db")},
        "ingest": {"ocr": "never"},
        "server": {"port": _free_port()},
        "generator": {"engine": "none"},
        # One replica of each, as the report says: local-cpu autoscales to 2, and a replica starting up in the
        # middle of a level would measure the scale-up, not batching.
        **{d: {"num_replicas": 1} for d in ("retriever", "reranker", "gateway")},
    }
    cfg = load_config("local-cpu", over)
    ingest([str(tmp / "coin.pdf"), str(tmp / "cup.mp4")], cfg)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    url = run_app(cfg)
    ready_s = time.perf_counter() - t0
    body = {"k": 10, "mode": args.mode}
    asyncio.run(_closed_loop(url, 4, 40, body, args.client))  # warm-up: model, index, connections
    levels = [int(c) for c in args.concurrency.split(",")]
    runs = []
    for c in levels:
        runs.append(asyncio.run(_closed_loop(url, c, args.requests, body, args.client)))
        print(f"c={c:3}  {runs[-1]['throughput_rps']:7.1f} req/s  p50 {runs[-1]['p50_ms']:7.1f} ms", flush=True)
    unbatched = None
    if not args.no_unbatched:
        # a fresh Ray for the second app, so nothing of the first one's lingers
        serve.shutdown()
        ray.shutdown()
        cfg1 = load_config("local-cpu", {**over, "retriever": {**over["retriever"], "batch_max_size": 1}})
        url = run_app(cfg1)
        asyncio.run(_closed_loop(url, 4, 40, body, args.client))
        unbatched = asyncio.run(_closed_loop(url, levels[-1], args.requests, body, args.client))
    other_ingress = None
    if not args.no_ingress_compare:
        # the same app behind Ray Serve's other ingress: a fresh Ray started with that mode's environment
        serve.shutdown()
        ray.shutdown()
        other = "proxy" if cfg.server.ingress == "haproxy" else "haproxy"
        cfg2 = load_config("local-cpu", {**over, "server": {**over["server"], "ingress": other}})
        for key in cfg.server.ray_env():
            os.environ.pop(key, None)
        url = run_app(cfg2)
        asyncio.run(_closed_loop(url, 4, 40, body, args.client))
        other_ingress = {
            "ingress": other,
            "runs": [asyncio.run(_closed_loop(url, c, args.requests, body, args.client)) for c in levels],
        }
    serve.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    base = runs[0]["throughput_rps"]
    result = {
        "benchmark": "search_http",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.search_http " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_at_end": os.getloadavg(),
        },
        "profile": "local-cpu",
        "mode": args.mode,
        "app_ready_s": ready_s,
        "batching": {"batch_max_size": cfg.retriever.batch_max_size, "wait_s": cfg.retriever.batch_wait_timeout_s},
        "ingress": cfg.server.ingress,
        "runs": runs,
        "speedup_vs_first": [r["throughput_rps"] / base for r in runs],
        "unbatched_at_max_concurrency": unbatched,
        "other_ingress": other_ingress,
        "batching_gain_at_max_concurrency": unbatched and runs[-1]["throughput_rps"] / unbatched["throughput_rps"],
        "target": {"rule": "throughput at the highest concurrency >= 3x throughput at the lowest", "ratio": None},
    }
    result["machine"]["loadavg_at_start"] = load_start
    result["target"]["ratio"] = result["speedup_vs_first"][-1]
    result["target"]["met"] = result["speedup_vs_first"][-1] >= 3.0
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    for r, sp in zip(runs, result["speedup_vs_first"], strict=True):
        print(
            f"c={r['concurrency']:3}  {r['throughput_rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
            f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}  x{sp:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
