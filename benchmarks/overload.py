"""Overload: open-loop /v1/search at 1x, 2x and 4x the measured capacity, with admission control on and off.

    python -m benchmarks.overload [--slo-ms 1000] [--duration 15] [--warmup 5] [--levels 1,2,4]

Ingests the test PDF and video (tests/data) into a temporary store and deploys the search app (local-cpu, no
generator, one replica each). The capacity is measured first: a closed loop of 32 clients, requests per second.
Then, for admission on (``server.admission``, its SLO = ``--slo-ms``) and off, each on a fresh Ray, the same
open-loop levels (Poisson arrivals at k x capacity; ``mmrag.bench.load``, aiohttp) run for ``--duration`` seconds
after ``--warmup`` seconds that are not counted (the gate learns the capacity in them).

Goodput: requests answered 200 within the SLO, per second of the level. Targets (admission on): goodput at 2x and
4x >= 90% of goodput at 1x; admitted requests' p99 within the SLO at every level; refused ones (503/429) answered
in < 50 ms p99. The client shares the 2-core machine with the server: its CPU per level is in the report.
Writes benchmarks/results/overload.json and .md.
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
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.search_http import _free_port

ROOT = Path(__file__).resolve().parents[1]


def _p(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _level_stats(run: dict[str, Any], records: list[dict[str, Any]], slo_ms: float) -> dict[str, Any]:
    measured = [r for r in records if r["run"] == run["label"] and r["phase"] == "measure" and not r.get("dropped")]
    ok = [r["latency_ms"] for r in measured if r["status"] == 200]
    refused = [r["latency_ms"] for r in measured if r["status"] in (429, 503)]
    other = [r for r in measured if r["status"] not in (200, 429, 503)]
    return {
        "rate_rps": run["rate_rps"],
        "sent": len(measured),
        "ok": len(ok),
        "refused": len(refused),
        "errors_or_timeouts": len(other),
        "dropped_over_cap": run.get("dropped_over_cap", 0),
        "goodput_rps": run["goodput_rps"],
        "ok_within_slo": sum(1 for x in ok if x <= slo_ms),
        "admitted_p50_ms": _p(ok, 50),
        "admitted_p99_ms": _p(ok, 99),
        "refused_p50_ms": _p(refused, 50),
        "refused_p99_ms": _p(refused, 99),
        "client_cpu_util": run["client"]["cpu_util"],
        "client_saturated": run["client"]["saturated"],
    }


def _median_round(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per level, the median over rounds of each number (the rounds are kept in the JSON as they were)."""
    out = []
    for i in range(len(rounds[0])):
        lv: dict[str, Any] = {}
        for key, value in rounds[0][i].items():
            values = [r[i][key] for r in rounds if r[i][key] is not None]
            if isinstance(value, bool) or not all(isinstance(v, int | float) for v in values):
                lv[key] = value
            else:
                med = float(np.median(values)) if values else None
                lv[key] = round(med) if med is not None and all(isinstance(v, int) for v in values) else med
        out.append(lv)
    return out


def _deploy(tmp: Path, admission: bool, slo_ms: float) -> tuple[str, Any]:
    from mmrag.config import load_config
    from mmrag.serve.run import run_app

    over = {
        "store": {"uri": str(tmp / "db")},
        "ingest": {"ocr": "never"},
        "server": {"port": _free_port(), "admission": {"enabled": admission, "search_slo_ms": slo_ms}},
        "generator": {"engine": "none"},
        "ingestor": {"enabled": False},  # searches are what is measured: no idle ingestion replica on the 2 cores
        **{d: {"num_replicas": 1, "autoscaling": None} for d in ("retriever", "reranker", "gateway")},
    }
    cfg = load_config("local-cpu", over)
    return run_app(cfg), cfg


def _load(url: str, out: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from mmrag.bench.load import LoadSettings, run_load

    s = LoadSettings(url=url, endpoint="search", out=str(out), plots=False, **kw)
    summary = run_load(s, log=lambda m: print("   ", m, flush=True))
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return summary, records


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Overload: open-loop /v1/search beyond capacity, admission control on and off",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']['cpus']} CPUs ({r['machine']['processor']}), no GPU; load average "
        f"{[round(x, 2) for x in r['machine']['loadavg_at_start']]} at start, "
        f"{[round(x, 2) for x in r['machine']['loadavg_at_end']]} at end",
        f"- app: local-cpu, search only, one replica each, ingress haproxy; the product's default search mode; "
        f"SLO {r['slo_ms']:g} ms end to end; client aiohttp in the same machine",
        f"- capacity: {r['capacity_rps']:.1f} requests/s (closed loop, 32 clients, admission on: p50 "
        f"{r['capacity_run']['p50_ms']:.0f} ms)",
        f"- each level: {r['warmup_s']:g} s warm-up (not counted), then {r['duration_s']:g} s of Poisson arrivals; "
        f"with admission on, {len(r.get('rounds_on', [[]]))} rounds of the levels, the table gives each number's "
        "median over them (the rounds are in the JSON): this 2-core VM's throughput moves ~15% minute to minute",
        "",
        "| admission | load | rate/s | sent | 200 | refused | errors | goodput/s | vs 1x | admitted p50 | "
        "admitted p99 | refused p99 | client CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(x: float | None) -> str:
        return "–" if x is None else f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"

    for mode in ("on", "off"):
        if "admission_" + mode not in r:
            continue
        levels = r["admission_" + mode]
        base = levels[0]["goodput_rps"] or 1e-9
        for lv, mult in zip(levels, r["levels"], strict=True):
            lines.append(
                f"| {mode} | {mult:g}x | {lv['rate_rps']:.0f} | {lv['sent']} | {lv['ok']} | {lv['refused']} | "
                f"{lv['errors_or_timeouts']} | {lv['goodput_rps']:.1f} | {lv['goodput_rps'] / base:.2f} | "
                f"{ms(lv['admitted_p50_ms'])} | {ms(lv['admitted_p99_ms'])} | {ms(lv['refused_p99_ms'])} | "
                f"{lv['client_cpu_util']:.2f} |"
            )
    lines += ["", "## Targets (admission on)", ""]
    for t in r["targets"]:
        lines.append(f"- **{'MET' if t['met'] else 'MISSED'}** {t['rule']}: {t['value']}")
    if r.get("notes"):
        lines += ["", *r["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slo-ms", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--levels", default="1,2,4")
    ap.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/overload.json"))
    ap.add_argument("--modes", default="on,off", help="admission modes to run: on,off (the targets need on)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds of the levels with admission on; the report gives medians"
    )
    ap.add_argument("--keep", default=None, help="copy each level's per-request records (records.jsonl) here")
    args = ap.parse_args(argv)
    import ray
    from ray import serve

    from mmrag.config import load_config
    from mmrag.ingest.pipeline import ingest

    levels = [float(x) for x in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="mmrag-overload-"))
    for f in ("coin.pdf", "cup.mp4"):
        shutil.copy(ROOT / "tests/data" / f, tmp / f)
    cfg0 = load_config("local-cpu", {"store": {"uri": str(tmp / "db")}, "ingest": {"ocr": "never"}})
    ingest([str(tmp / "coin.pdf"), str(tmp / "cup.mp4")], cfg0)
    ray.shutdown()  # ingestion's Ray Data actors gone before any measurement
    load_start = os.getloadavg()
    result: dict[str, Any] = {"levels": levels, "slo_ms": args.slo_ms}
    capacity = None
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"on", "off"} or "on" not in modes:
        ap.error("--modes takes on and/or off, and on must be one of them (the targets are about it)")
    for mode in modes:
        print(f"== admission {mode}", flush=True)
        url, _ = _deploy(tmp, mode == "on", args.slo_ms)
        common = {"timeout_s": args.timeout, "slo": {"latency_ms": args.slo_ms}}
        _load(url, tmp / f"warm-{mode}", concurrency=[4], requests=60, warmup_s=0, **common)
        if capacity is None:
            cap, _ = _load(url, tmp / "capacity", concurrency=[32], requests=600, warmup_s=2, **common)
            run = cap["runs"][0]
            capacity = run["throughput_rps"]
            result["capacity_run"] = {"throughput_rps": capacity, "p50_ms": run["latency_ms"]["p50"]}
            print(f"   capacity {capacity:.1f} req/s", flush=True)
        rates = [round(m * capacity, 2) for m in levels]
        rounds = []
        for k in range(args.repeat if mode == "on" else 1):
            summary, records = _load(
                url,
                tmp / f"open-{mode}-{k}",
                rate=rates,
                duration_s=args.duration,
                warmup_s=args.warmup,
                max_in_flight=4000,
                **common,
            )
            rounds.append([_level_stats(run, records, args.slo_ms) for run in summary["runs"]])
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp / f"open-{mode}-{k}" / "records.jsonl", Path(args.keep) / f"records-{mode}-{k}.jsonl")
        result["admission_" + mode] = rounds[len(rounds) // 2] if len(rounds) == 1 else _median_round(rounds)
        result["rounds_" + mode] = rounds
        serve.shutdown()
        ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    on = result["admission_on"]
    base = on[0]["goodput_rps"]
    targets = []
    ratios = [
        [r[i]["goodput_rps"] / max(r[0]["goodput_rps"], 1e-9) for r in result["rounds_on"]] for i in range(len(levels))
    ]
    for i, (lv, m) in enumerate(zip(on[1:], levels[1:], strict=True), start=1):
        ratio = float(np.median(ratios[i]))
        each = ", ".join(f"{x:.0%}" for x in ratios[i])
        targets.append(
            {
                "rule": f"goodput at {m:g}x >= 90% of goodput at 1x (median of the rounds' ratios)",
                "value": f"{lv['goodput_rps']:.1f} vs {base:.1f}; ratio {ratio:.0%} (rounds: {each})",
                "met": ratio >= 0.9,
            }
        )
    worst = max((lv["admitted_p99_ms"] or 0.0) for lv in on)
    targets.append(
        {"rule": f"admitted p99 within the SLO ({args.slo_ms:g} ms) at every level", "value": f"{worst:.0f} ms",
         "met": worst <= args.slo_ms}
    )  # fmt: skip
    refused = [lv["refused_p99_ms"] for lv in on if lv["refused_p99_ms"] is not None]
    targets.append(
        {
            "rule": "refused requests answered in < 50 ms p99",
            "value": f"{max(refused):.1f} ms" if refused else "none refused",
            "met": bool(refused) and max(refused) < 50.0,
        }
    )
    result.update(
        benchmark="overload",
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command="python -m benchmarks.overload " + " ".join(argv if argv is not None else sys.argv[1:]),
        machine={
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_at_start": load_start,
            "loadavg_at_end": os.getloadavg(),
        },
        capacity_rps=capacity,
        duration_s=args.duration,
        warmup_s=args.warmup,
        targets=targets,
    )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
