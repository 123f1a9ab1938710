"""The harness's own ceiling: drive the trivial server (``mmrag.bench.server``, in a subprocess) as hard as the client
can, and report requests/s, the client's CPU per request, and how late open-loop arrivals start at a high rate.

The client and the server share this machine's cores, so the absolute req/s here is a lower bound on what the client
alone can drive; ``client_ceiling_rps`` (1000 / client CPU ms per request) is what one fully used core would drive.
Compare either with what the real server serves (``throughput_rps`` of a ``mmrag bench load`` run): the harness
is never the bottleneck when the server's rate is far below them and the run's ``client.cpu_util`` stays low.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrag.bench.load import LoadSettings, client_versions, event_loop_factory, load_average, machine_info, run_load

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


class TrivialServerProcess:
    """``python -m mmrag.bench.server`` in a subprocess: ``with TrivialServerProcess(...) as srv: srv.url``."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> TrivialServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmrag.bench.server", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"the trivial server did not start (said {line!r})")
        self.url = line.split()[-1]
        return self

    def cpu_s(self) -> float | None:
        return _proc_cpu_s(self.proc.pid) if self.proc else None

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def selftest(
    *,
    seconds: float = 5.0,
    warmup_s: float = 1.0,
    concurrency: int = 32,
    rate: float = 1000.0,
    clients: list[str] | None = None,
    endpoints: list[str] | None = None,
    tokens: int = 16,
    out: str | Path = "benchmarks/results/load/selftest",
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Closed loop at ``concurrency`` for each client library and endpoint, then an open loop at ``rate`` with the
    first client; writes ``summary.json`` and ``summary.md`` into ``out`` and returns the summary."""
    log = log or (lambda _m: None)
    clients = clients or ["aiohttp", "httpx"]
    endpoints = endpoints or ["search", "chat"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, loop_name = event_loop_factory("auto")
    result: dict[str, Any] = {
        "benchmark": "load-selftest",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        "server": f"mmrag.bench.server (bare asyncio, {loop_name}) in a subprocess, {tokens} tokens per stream, "
        "no delays",
        "settings": {"seconds": seconds, "warmup_s": warmup_s, "concurrency": concurrency, "rate": rate},
        "runs": [],
    }
    plan: list[tuple[str, str, dict[str, Any]]] = [
        (c, e, {"concurrency": [concurrency]}) for c in clients for e in endpoints
    ]
    plan += [(clients[0], e, {"rate": [rate]}) for e in endpoints]
    with TrivialServerProcess("--tokens", str(tokens)) as srv, tempfile.TemporaryDirectory() as tmp:
        for i, (client, endpoint, level) in enumerate(plan):
            s = LoadSettings(
                url=srv.url,
                endpoint=endpoint,
                duration_s=seconds,
                warmup_s=warmup_s,
                client=client,  # type: ignore[arg-type]
                out=str(Path(tmp) / str(i)),
                plots=False,
                max_in_flight=max(concurrency, 256),
                **level,
            )
            cpu0 = srv.cpu_s()
            summary = run_load(s)
            cpu1 = srv.cpu_s()
            r = summary["runs"][0]
            c = r["client"]
            sent = c["requests_sent"]
            server_ms = (cpu1 - cpu0) / sent * 1e3 if cpu0 is not None and cpu1 is not None and sent else None
            row = {
                "client": client_versions(client, loop_name)["http"],
                "endpoint": endpoint,
                "level": r["label"],
                "throughput_rps": r["throughput_rps"],
                "ok": r["ok"],
                "requests": r["requests"],
                "errors": r["errors_by_status"],
                "dropped_over_cap": r["dropped_over_cap"],
                "latency_p50_ms": r["latency_ms"]["p50"],
                "latency_p99_ms": r["latency_ms"]["p99"],
                "output_tokens_per_s": r["output_tokens_per_s"],
                "schedule_lag_ms": {k: r["schedule_lag_ms"][k] for k in ("p50", "p99", "max")},
                "client_cpu_util": c["cpu_util"],
                "client_cpu_ms_per_request": c["cpu_ms_per_request"],
                "client_ceiling_rps": round(1e3 / c["cpu_ms_per_request"]) if c["cpu_ms_per_request"] else None,
                "server_cpu_ms_per_request": None if server_ms is None else round(server_ms, 4),
            }
            result["runs"].append(row)
            log(
                f"{row['client']:>15} {endpoint:6} {row['level']:>12}: {row['throughput_rps']:8.0f} req/s, client "
                f"{row['client_cpu_ms_per_request']} ms CPU/request (ceiling ~{row['client_ceiling_rps']} req/s "
                f"per core), server {row['server_cpu_ms_per_request']} ms CPU/request"
            )
    result["load_average"]["end"] = load_average()
    closed = [r for r in result["runs"] if r["level"].startswith("c=")]
    best = max(closed, key=lambda r: r["throughput_rps"])
    result["max_rps"] = {
        "client": best["client"],
        "endpoint": best["endpoint"],
        "throughput_rps": best["throughput_rps"],
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Load harness self-test: how much load the client alone can drive",
        "",
        f"- date: {r['date']}; command: `{r.get('command') or '(Python API)'}`",
        f"- machine: {m.get('processor')}, {m.get('cpu_count')} CPUs, {m.get('memory_gb', '?')} GB, "
        f"{m.get('platform')}; load average at start {r['load_average']['start']}, at end {r['load_average']['end']}",
        f"- server: {r['server']}; client and server share the machine",
        f"- each level: {r['settings']['warmup_s']} s warm-up, then {r['settings']['seconds']} s measured",
        "",
        "| client | endpoint | level | req/s | ok | p50 ms | p99 ms | sched lag p99 ms | client CPU "
        "| client CPU ms/req | client ceiling req/s/core | server CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        lag = x["schedule_lag_ms"]["p99"]
        lines.append(
            f"| {x['client']} | {x['endpoint']} | {x['level']} | {x['throughput_rps']:.0f} | {x['ok']}/{x['requests']} "
            f"| {x['latency_p50_ms']} | {x['latency_p99_ms']} | {'-' if lag is None else lag} "
            f"| {x['client_cpu_util']:.0%} | {x['client_cpu_ms_per_request']} | {x['client_ceiling_rps']} "
            f"| {x['server_cpu_ms_per_request']} |"
        )
    lines += [
        "",
        "`chat` streams 16 tokens per request (each parsed and timestamped). `client ceiling` = 1000 / client CPU ms "
        "per request: what the harness drives with one core to itself. The open-loop rows show how late Poisson "
        "arrivals start at a high offered rate (scheduling lag).",
        "",
    ]
    return "\n".join(lines)
