"""Cross-check ``mmrag bench load`` with an external OpenAI-compatible load tool (guidellm) on /v1/chat/completions.

    python -m benchmarks.crosscheck --url http://127.0.0.1:8000 [--concurrency 1,2,4]
        [--requests 100 | --duration 30] [--warmup 2] [--queries FILE] [--max-tokens N]
        [--out benchmarks/results/load/crosscheck] [--install]

For each concurrency level, runs our harness (closed loop, streaming chat) and then guidellm (``--profile
kind=concurrent,streams=N``) with the same queries (in the same order), the same ``max_tokens``, the same
warm-up and the same stop condition, one after the other against the same server, and writes a side-by-side table
(``crosscheck.md``, ``crosscheck.json``, ``crosscheck.png``) next to both tools' own outputs (``harness/``,
``guidellm/`` with its JSON reports gzipped and its console logs).

guidellm cannot live in the project's venv: guidellm 0.8.1 pins ``click~=8.4.0`` and pulls a ``multidict`` that would
downgrade the venv's (click 8.5.1, multidict 7.2.1), and aiperf 0.13 would downgrade rich, pandas, pillow, psutil,
pyzmq, huggingface_hub and more. So it goes into its own venv (``--tools-venv``, default ``.venv-tools``), made on
first use with ``--install``: CPU torch 2.13.0 first (guidellm requires torch; unpinned, pip takes a multi-GB CUDA
build), then guidellm, ~1.5 GB and ~2 minutes.

guidellm probes ``GET /health`` before a run; mmrag serves ``/healthz``, so the probe is turned off
(``validate_backend=false``). It counts tokens from the server's ``usage`` (it sends ``stream_options``), as ours does.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GUIDELLM = "guidellm==0.8.1"
TORCH_CPU = "torch==2.13.0"


def ensure_tools(venv: Path, install: bool) -> Path:
    """The guidellm executable in ``venv``; made there when ``install`` (else a clear error)."""
    exe = venv / "bin" / "guidellm"
    if exe.exists():
        return exe
    steps = [
        [_base_python(), "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", TORCH_CPU],
        [str(venv / "bin" / "pip"), "install", "-q", GUIDELLM],
    ]
    if not install:
        cmds = "\n  ".join(shlex.join(s) for s in steps)
        raise SystemExit(f"guidellm is not installed in {venv}. Re-run with --install, or run:\n  {cmds}")
    for step in steps:
        print("+", shlex.join(step), file=sys.stderr, flush=True)
        subprocess.run(step, check=True)
    return exe


def _base_python() -> str:
    """The interpreter the project's venv was made from (a venv made from inside a venv is fine too)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def queries_file(path: str | None, rows: int, workdir: Path) -> Path:
    """guidellm sends each row of a text file once, in order: repeat our queries (same order) to ``rows`` rows."""
    from mmrag.bench.workloads import load_queries

    qs = [q["query"] for q in load_queries(path)]
    target = workdir / "queries.txt"
    target.write_text("\n".join(qs[i % len(qs)] for i in range(rows)) + "\n")
    return target


def run_guidellm(
    exe: Path, args: argparse.Namespace, streams: int, data: Path, out: Path, warmup_requests: int
) -> dict[str, Any]:
    """guidellm at ``streams`` concurrent streams. Its warm-up is part of its budget (max_duration/max_requests), and
    with a request budget it can only be a request count: it gets our warm-up seconds on top of the duration, or
    as many warm-up requests as our harness made at this level on top of the count."""
    backend = f"kind=openai_http,target={args.url.rstrip('/')},model={args.model},"
    backend += "request_format=/v1/chat/completions,validate_backend=false"
    if args.max_tokens:
        backend += f",max_tokens={args.max_tokens}"
    profile = f"kind=concurrent,streams={streams}"
    if args.duration:
        constraint = f"kind=max_duration,seconds={args.duration + args.warmup}"
        if args.warmup:
            profile += f",warmup={max(args.warmup, 1.0)}"  # guidellm reads a value below 1 as a fraction
    else:
        constraint = f"kind=max_requests,count={args.requests + warmup_requests}"
        if warmup_requests:
            profile += f",warmup={warmup_requests}"
    result = out / "guidellm" / f"c{streams}.json"
    cmd = [str(exe), "run", "--backend", backend, "--profile", profile, "--constraint", constraint]
    cmd += ["--data", f"kind=text_file,path={data}", "--output", f"kind=json,path={result}", "--disable-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with (out / "guidellm" / f"c{streams}.log").open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"guidellm failed (exit {proc.returncode}); see {out / 'guidellm' / f'c{streams}.log'}")
    numbers = guidellm_numbers(result)
    # guidellm's report holds every request (~1 MB a level): keep it, compressed
    with result.open("rb") as src, gzip.open(result.with_suffix(".json.gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    result.unlink()
    return {"command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1), **numbers}


def _pct(dist: dict[str, Any], p: str, scale: float = 1.0) -> float | None:
    v = (dist.get("percentiles") or {}).get(p)
    return None if v is None else round(v * scale, 3)


def guidellm_numbers(path: Path) -> dict[str, Any]:
    """The numbers comparable with ours, from a guidellm JSON report (one benchmark)."""
    bench = json.loads(path.read_text())["benchmarks"][0]
    m = bench["metrics"]
    ok = m["request_totals"]["successful"]
    total = m["request_totals"]["total"]
    lat = m["request_latency"]["successful"]
    ttft = m["time_to_first_token_ms"]["successful"]
    itl = m["inter_token_latency_ms"]["successful"]
    duration = bench["duration"]
    return {
        "guidellm_version": json.loads(path.read_text())["metadata"]["guidellm_version"],
        "requests": total,
        "ok": ok,
        "errors": m["request_totals"]["errored"],
        "duration_s": round(duration, 3),
        "throughput_rps": round(total / duration, 3) if duration else None,
        "guidellm_requests_per_second_mean": round(m["requests_per_second"]["successful"]["mean"], 3),
        "latency_ms": {p: _pct(lat, p, 1e3) for p in ("p50", "p90", "p99")},
        "ttft_ms": {p: _pct(ttft, p) for p in ("p50", "p90", "p99")},
        "itl_ms": {p: _pct(itl, p) for p in ("p50", "p90", "p99")},
        "output_tokens_per_s": round(m["output_tokens_per_second"]["total"]["mean"], 3),
        "mean_concurrency": round(m["request_concurrency"]["successful"]["mean"], 3),
        "warnings": [w.get("message") for w in bench.get("warnings") or []],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Latency, TTFT and ITL (p50 and p99) against concurrency, one line per tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = [lv["concurrency"] for lv in result["levels"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in zip(axes, ("latency_ms", "ttft_ms", "itl_ms"), ("latency", "TTFT", "ITL"), strict=True):
        for tool, color in (("harness", "C0"), ("guidellm", "C1")):
            for p, style in (("p50", "o-"), ("p99", "^:")):
                ys = [lv[tool][key][p] for lv in result["levels"]]
                ax.plot(cs, ys, style, color=color, label=f"{tool} {p}")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("ms")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"mmrag bench load vs guidellm: {result['url']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Cross-check: mmrag bench load vs guidellm on /v1/chat/completions",
        "",
        f"- target: `{result['url']}`; date {result['date']}; command: `{result['command']}`",
        f"- machine: {result['machine'].get('processor')}, {result['machine'].get('cpu_count')} CPUs; load average "
        f"at start {result['load_average']['start']}, at end {result['load_average']['end']}",
        f"- same queries in the same order, max_tokens {result['max_tokens'] or '(server default)'}, warm-up "
        f"{result['warmup_s']} s, stop: {result['stop']}; the two tools ran one after the other",
        "",
        "| concurrency | tool | req/s | ok/total | latency p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms | ITL p50 ms "
        "| output tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in result["levels"]:
        for tool in ("harness", "guidellm"):
            x = lv[tool]
            lines.append(
                f"| {lv['concurrency']} | {tool} | {x['throughput_rps']} | {x['ok']}/{x['requests']} "
                f"| {x['latency_ms']['p50']} | {x['latency_ms']['p99']} | {x['ttft_ms']['p50']} "
                f"| {x['ttft_ms']['p99']} | {x['itl_ms']['p50']} | {x['output_tokens_per_s']} |"
            )
    lines += [
        "",
        "req/s: requests over the measured window (ours: first measured start to last end; guidellm: its benchmark "
        "duration). guidellm's output tok/s is its own time-averaged rate; ours is total tokens over the window. "
        "guidellm's warm-up counts inside its budget, so it was given ours on top (seconds, or with a request budget "
        "the number of warm-up requests our harness made at that level).",
        "",
        "![crosscheck](crosscheck.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.crosscheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="mmrag server base URL")
    ap.add_argument("--concurrency", default="1,2,4", help="comma-separated closed-loop levels")
    stop = ap.add_mutually_exclusive_group()
    stop.add_argument("--requests", type=int, help="measured requests per level (default 100)")
    stop.add_argument("--duration", type=float, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per level, both tools")
    ap.add_argument("--queries", help="queries file (default: the harness's built-in list)")
    ap.add_argument("--max-tokens", type=int, help="max_tokens for both tools (default: the server's)")
    ap.add_argument("--model", default="mmrag")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/load/crosscheck"))
    ap.add_argument("--tools-venv", default=str(ROOT / ".venv-tools"), help="venv holding guidellm")
    ap.add_argument("--install", action="store_true", help="create the tools venv and install guidellm if missing")
    args = ap.parse_args(argv)
    if args.requests is None and args.duration is None:
        args.requests = 100

    from mmrag.bench.load import LoadSettings, load_average, machine_info, run_load

    exe = ensure_tools(Path(args.tools_venv), args.install)
    out = Path(args.out)
    levels = [int(c) for c in args.concurrency.split(",") if c]
    # enough rows for the warm-up and the measured part at the fastest rate we could plausibly see
    rows = args.requests * 3 + 2000 if args.requests else 20000
    (out / "guidellm").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mmrag-crosscheck-"))
    data = queries_file(args.queries, rows, workdir)
    result: dict[str, Any] = {
        "benchmark": "crosscheck",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m benchmarks.crosscheck " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "url": args.url,
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        "max_tokens": args.max_tokens,
        "warmup_s": args.warmup,
        "stop": f"{args.requests} requests" if args.requests else f"{args.duration} s",
        "levels": [],
    }
    for c in levels:
        s = LoadSettings(
            url=args.url,
            endpoint="chat",
            concurrency=[c],
            requests=args.requests,
            duration_s=args.duration,
            warmup_s=args.warmup,
            queries_file=args.queries,
            max_tokens=args.max_tokens,
            model=args.model,
            name=f"crosscheck-c{c}",
            out=str(out / "harness" / f"c{c}"),
        )
        r = run_load(s, log=lambda m: print(m, file=sys.stderr, flush=True))["runs"][0]
        ours = {
            "requests": r["requests"],
            "ok": r["ok"],
            "errors": r["errors_by_status"],
            "throughput_rps": r["throughput_rps"],
            "latency_ms": {p: r["latency_ms"][p] for p in ("p50", "p90", "p99")},
            "ttft_ms": {p: r["ttft_ms"][p] for p in ("p50", "p90", "p99")},
            "itl_ms": {p: r["itl_ms"][p] for p in ("p50", "p90", "p99")},
            "output_tokens_per_s": r["output_tokens_per_s"],
            "client_cpu_util": r["client"]["cpu_util"],
        }
        theirs = run_guidellm(exe, args, c, data, out, r["warmup_requests"])
        result["levels"].append({"concurrency": c, "harness": ours, "guidellm": theirs})
    shutil.rmtree(workdir, ignore_errors=True)
    result["load_average"]["end"] = load_average()
    plot(result, out / "crosscheck.png")
    (out / "crosscheck.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "crosscheck.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
