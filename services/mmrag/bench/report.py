"""Writes a load run's ``summary.json``, ``summary.md`` and plots (``latency_vs_throughput.png``, ``latency_cdf.png``).

matplotlib (the ``bench`` extra) is imported only to draw, with the Agg backend; without it the JSON and Markdown are
still written and the summary says why the plots are missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def one_line(run: Mapping[str, Any]) -> str:
    """A level's result in one line, for the console."""
    line = (
        f"{run['label']:>12}: {run['throughput_rps']:8.1f} req/s  ok {run['ok']}/{run['requests']}"
        f"  p50 {_ms(run['latency_ms']['p50'])} ms  p99 {_ms(run['latency_ms']['p99'])} ms"
    )
    if run["ttft_ms"]["count"]:
        line += f"  ttft p50 {_ms(run['ttft_ms']['p50'])} ms  itl p50 {_ms(run['itl_ms']['p50'])} ms"
    if run["slo"]:
        line += f"  goodput {run['goodput_rps']:.1f} req/s"
    if run["errors_by_status"]:
        line += f"  errors {run['errors_by_status']}"
    if run["dropped_over_cap"]:
        line += f"  dropped {run['dropped_over_cap']}"
    c = run["client"]
    line += f"  client cpu {c['cpu_util']:.0%}" + (" (CLIENT-BOUND)" if c["saturated"] else "")
    return line


def markdown(summary: Mapping[str, Any]) -> str:
    t = summary["target"]
    m = summary["machine"]
    lines = [
        f"# Load: {summary['name']}",
        "",
        f"- target: `{t['url']}{t['path']}` ({t['endpoint']}, {'streaming' if t['stream'] else 'not streaming'}), "
        f"{t['queries']} distinct queries",
        f"- date: {summary['date']}",
        f"- command: `{summary.get('command') or '(Python API)'}`",
        f"- machine: {m.get('processor')}, {m.get('cpu_count')} CPUs, {m.get('memory_gb', '?')} GB, "
        f"{m.get('platform')}; load average at start {summary['load_average']['start']}, "
        f"at end {summary['load_average'].get('end')}",
        f"- client: {summary['client']['http']} on {summary['client']['loop']}; "
        f"warm-up {summary['settings']['warmup_s']} s per level (excluded)",
        f"- SLOs (goodput): {', '.join(f'{k} <= {v:g}' for k, v in summary['slo'].items()) or 'none given'}",
        "",
    ]
    streaming = any(r["ttft_ms"]["count"] for r in summary["runs"])
    head = ["level", "req/s", "ok", "errors", "goodput req/s", "p50 ms", "p90 ms", "p99 ms"]
    if streaming:
        head += ["TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "tok/s"]
    head += ["sched lag p99 ms", "client CPU"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["runs"]:
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors_by_status"].items()) or "0"
        if r["dropped_over_cap"]:
            errs += f"; dropped {r['dropped_over_cap']}"
        row = [
            r["label"],
            f"{r['throughput_rps']:.1f}",
            f"{r['ok']}/{r['requests']}",
            errs,
            f"{r['goodput_rps']:.1f}" if r["slo"] else "-",
            _ms(r["latency_ms"]["p50"]),
            _ms(r["latency_ms"]["p90"]),
            _ms(r["latency_ms"]["p99"]),
        ]
        if streaming:
            tps = r["output_tokens_per_s"]
            row += [
                _ms(r["ttft_ms"]["p50"]),
                _ms(r["ttft_ms"]["p99"]),
                _ms(r["itl_ms"]["p50"]),
                _ms(r["itl_ms"]["p99"]),
                "-" if tps is None else f"{tps:.0f}",
            ]
        c = r["client"]
        row += [_ms(r["schedule_lag_ms"]["p99"]), f"{c['cpu_util']:.0%}" + (" (bound)" if c["saturated"] else "")]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Latencies are of successful requests; req/s counts every measured request (errors too) over the window from "
        "the first measured start to the last measured end. Goodput counts successful requests meeting every SLO. "
        "`client CPU` is the harness's own CPU use (one core = 100%); `(bound)` marks a level where the client, "
        "not the server, may have limited the numbers.",
        "",
    ]
    for name in ("latency_vs_throughput.png", "latency_cdf.png"):
        if name in summary.get("files", {}).get("plots", []):
            lines.append(f"![{name}]({name})")
    return "\n".join(lines) + "\n"


def _measured_latencies(records_path: Path) -> dict[str, list[float]]:
    by_run: dict[str, list[float]] = {}
    with records_path.open() as f:
        for line in f:
            r = json.loads(line)
            if r["phase"] == "measure" and r.get("status") == 200 and not r.get("error"):
                by_run.setdefault(r["run"], []).append(r["latency_ms"])
    return by_run


def plot(summary: Mapping[str, Any], records_path: Path, out: Path) -> list[str]:
    """Draw the two plots; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = summary["runs"]
    title = f"{summary['name']} ({summary['target']['endpoint']})"
    streaming = any(r["ttft_ms"]["count"] for r in runs)
    fig, axes = plt.subplots(1, 2 if streaming else 1, figsize=(11 if streaming else 6.5, 4.5), squeeze=False)
    ax = axes[0][0]
    x = [r["throughput_rps"] for r in runs]
    for p, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
        ax.plot(x, [r["latency_ms"][p] for r in runs], style, label=f"latency {p}")
    for r in runs:
        if r["latency_ms"]["p50"] is not None:
            ax.annotate(r["label"], (r["throughput_rps"], r["latency_ms"]["p50"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if streaming:
        ax2 = axes[0][1]
        for p, style in (("p50", "o-"), ("p99", "^:")):
            ax2.plot(x, [r["ttft_ms"][p] for r in runs], style, color="C0", label=f"TTFT {p}")
            ax2.plot(x, [r["itl_ms"][p] for r in runs], style, color="C1", label=f"ITL {p}")
        ax2.set_xlabel("throughput (requests/s)")
        ax2.set_ylabel("ms")
        ax2.set_title("time to first token, inter-token latency", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_throughput.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, lat in _measured_latencies(records_path).items():
        v = np.sort(np.asarray(lat))
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of successful requests")
    ax.set_title(f"latency CDF: {title}", fontsize=9)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)
    return ["latency_vs_throughput.png", "latency_cdf.png"]


def write_outputs(summary: dict[str, Any], out: Path, *, plots: bool, records_path: Path) -> dict[str, Any]:
    """summary.json, summary.md and (when ``plots``) the PNGs; returns the ``files`` entry of the summary."""
    files: dict[str, Any] = {"records": records_path.name, "summary": "summary.json", "markdown": "summary.md"}
    files["plots"] = []
    if plots:
        try:
            files["plots"] = plot(summary, records_path, out)
        except ImportError as e:
            files["plots_missing"] = f"matplotlib is not installed ({e}); pip install 'mmrag[bench]'"
    summary["files"] = files
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    return files


def load_records(path: Path) -> Iterable[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            yield json.loads(line)


def compare(dirs: list[Path], out: Path, labels: list[str] | None = None) -> dict[str, Any]:
    """Put several load runs side by side (e.g. 1 vs 2 retriever replicas): ``compare.md``, ``compare.json`` and
    ``compare.png`` (latency p50/p99 against throughput, one line per run) in ``out``."""
    runs = []
    for i, d in enumerate(dirs):
        path = d / "summary.json" if d.is_dir() else d
        if not path.is_file():
            raise ValueError(f"{path} does not exist: give directories written by mmrag bench load")
        s = json.loads(path.read_text())
        runs.append((labels[i] if labels and i < len(labels) else s["name"], s))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, s in runs:
        for r in s["runs"]:
            rows.append(
                {
                    "run": label,
                    "level": r["label"],
                    "throughput_rps": r["throughput_rps"],
                    "goodput_rps": r["goodput_rps"] if r["slo"] else None,
                    "errors": r["errors"],
                    "latency_p50_ms": r["latency_ms"]["p50"],
                    "latency_p99_ms": r["latency_ms"]["p99"],
                    "ttft_p50_ms": r["ttft_ms"]["p50"],
                    "client_saturated": r["client"]["saturated"],
                }
            )
    result = {"runs": [{"label": label, "name": s["name"], "date": s["date"]} for label, s in runs], "rows": rows}
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Load runs compared",
        "",
        *[f"- **{label}**: `{s.get('command') or s['name']}` ({s['date']})" for label, s in runs],
        "",
        "| run | level | req/s | goodput req/s | errors | p50 ms | p99 ms | TTFT p50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        good = "-" if x["goodput_rps"] is None else f"{x['goodput_rps']:.1f}"
        lines.append(
            f"| {x['run']} | {x['level']} | {x['throughput_rps']:.1f} | {good} | {x['errors']} "
            f"| {_ms(x['latency_p50_ms'])} | {_ms(x['latency_p99_ms'])} | {_ms(x['ttft_p50_ms'])} |"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        lines += ["", "(no plot: matplotlib is not installed; pip install 'mmrag[bench]')"]
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (label, s) in enumerate(runs):
            x = [r["throughput_rps"] for r in s["runs"]]
            ax.plot(x, [r["latency_ms"]["p50"] for r in s["runs"]], "o-", color=f"C{i}", label=f"{label} p50")
            ax.plot(x, [r["latency_ms"]["p99"] for r in s["runs"]], "^:", color=f"C{i}", label=f"{label} p99")
            for r in s["runs"]:
                if r["latency_ms"]["p50"] is not None:
                    ax.annotate(r["label"], (r["throughput_rps"], r["latency_ms"]["p50"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "compare.png", dpi=110)
        plt.close(fig)
        lines += ["", "![compare](compare.png)"]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return result
