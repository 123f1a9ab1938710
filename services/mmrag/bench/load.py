"""The load engine: closed-loop (fixed concurrency) and open-loop (Poisson arrivals) runs over HTTP.

* **Closed loop** (``concurrency=N``): N workers, each sending its next request when the last one has returned.
* **Open loop** (``rate=R``): arrival times are drawn up front (exponential gaps, seeded) and each request starts at
  its own time whatever the earlier ones are doing, so a slow server cannot slow the arrivals down (the usual
  "coordinated omission" of closed-loop tools). How late each request actually started is recorded
  (``lag_ms``): a large lag means the client, not the server, was the bottleneck. At most ``max_in_flight``
  requests are outstanding; an arrival beyond that is not sent and is counted as ``dropped_over_cap``.

Each level first runs ``warmup_s`` seconds whose requests are recorded (``phase: warmup``) but left out of the
statistics, then measures for ``duration_s`` seconds or ``requests`` requests. The client's own CPU time is
measured for every level: ``client.cpu_util`` near 1.0 means the (single-threaded) event loop was saturated.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmrag.bench.stats import STREAM_ONLY_SLOS, summarize
from mmrag.bench.workloads import ResponseParser, Workload, load_queries, make_workload

ClientLib = Literal["aiohttp", "httpx"]
LoopKind = Literal["auto", "asyncio", "uvloop"]
#: Client-side CPU use (fraction of one core) above which a level is flagged as client-bound.
SATURATED_CPU = 0.85
#: Open-loop p99 scheduling lag above which a level is flagged as client-bound.
SATURATED_LAG_MS = 10.0


def event_loop_factory(kind: str = "auto") -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """``(loop factory for asyncio.Runner, name)``: uvloop when asked for, or when ``auto`` and it is installed."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ValueError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
    return None, "asyncio"


# ---------------------------------------------------------------------------------------------- transports
class Transport:
    """One HTTP client library behind the same call: send a body, feed the parser, return the status."""

    name = ""

    def __init__(self, base_url: str, pool: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.pool = pool

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def post(self, path: str, body: bytes, parser: ResponseParser, stream: bool) -> int:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _http_error(parser: ResponseParser, status: int, data: bytes) -> None:
        parser.error = f"http_{status}: {data[:200].decode('utf-8', 'replace')}"


class AiohttpTransport(Transport):
    name = "aiohttp"

    async def __aenter__(self) -> AiohttpTransport:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.pool, limit_per_host=self.pool, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the engine times requests out itself
            headers={"Content-Type": "application/json"},
            read_bufsize=1 << 20,  # room for long SSE lines
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def post(self, path: str, body: bytes, parser: ResponseParser, stream: bool) -> int:
        clock = time.perf_counter
        async with self.session.post(self.base_url + path, data=body) as resp:
            status = resp.status
            if status != 200:
                self._http_error(parser, status, await resp.read())
            elif stream:
                async for line in resp.content:
                    parser.feed(line.decode("utf-8", "replace"), clock())
                parser.finish(clock())
            else:
                parser.whole(await resp.read())
            return status


class HttpxTransport(Transport):
    name = "httpx"

    async def __aenter__(self) -> HttpxTransport:
        import httpx

        limits = httpx.Limits(max_connections=self.pool, max_keepalive_connections=self.pool, keepalive_expiry=60)
        self.client = httpx.AsyncClient(limits=limits, timeout=None, headers={"Content-Type": "application/json"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def post(self, path: str, body: bytes, parser: ResponseParser, stream: bool) -> int:
        clock = time.perf_counter
        async with self.client.stream("POST", self.base_url + path, content=body) as resp:
            status = resp.status_code
            if status != 200:
                self._http_error(parser, status, await resp.aread())
            elif stream:
                async for line in resp.aiter_lines():
                    parser.feed(line, clock())
                parser.finish(clock())
            else:
                parser.whole(await resp.aread())
            return status


TRANSPORTS: dict[str, type[Transport]] = {"aiohttp": AiohttpTransport, "httpx": HttpxTransport}


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class LoadSettings:
    """Everything one ``mmrag bench load`` invocation does (the CLI builds it; tests build it directly)."""

    url: str
    endpoint: str = "search"
    concurrency: list[int] = field(default_factory=list)  # closed-loop levels
    rate: list[float] = field(default_factory=list)  # open-loop levels (requests/s)
    duration_s: float | None = None  # measured seconds per level ...
    requests: int | None = None  # ... or measured requests per level
    warmup_s: float = 2.0
    timeout_s: float = 60.0
    max_in_flight: int = 512  # open loop: outstanding requests cap
    seed: int = 0
    client: ClientLib = "aiohttp"
    loop: LoopKind = "auto"
    queries_file: str | None = None
    stream: bool = True
    k: int | None = None
    collection: str | None = None
    mode: str | None = None  # search mode
    model: str = "mmrag"
    max_tokens: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, float] = field(default_factory=dict)
    name: str | None = None
    out: str | None = None
    command: str | None = None
    plots: bool = True

    def validate(self) -> None:
        if self.concurrency and self.rate:
            raise ValueError("give --concurrency (closed loop) or --rate (open loop), not both")
        if not self.concurrency and not self.rate:
            self.concurrency = [1]
        if any(c < 1 for c in self.concurrency):
            raise ValueError("--concurrency levels must be >= 1")
        if any(not (r > 0 and math.isfinite(r)) for r in self.rate):
            raise ValueError("--rate levels must be positive request rates (requests/s)")
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of --duration SECONDS or --requests N")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError("--duration must be > 0 seconds")
        if self.requests is not None and self.requests < 1:
            raise ValueError("--requests must be >= 1")
        if self.warmup_s < 0 or self.timeout_s <= 0 or self.max_in_flight < 1:
            raise ValueError("--warmup must be >= 0, --timeout > 0 and --max-in-flight >= 1")
        if self.client not in TRANSPORTS:
            raise ValueError(f"--client must be one of {', '.join(TRANSPORTS)}")
        streams = self.stream and self.endpoint in ("answer", "chat")
        if not streams and (bad := STREAM_ONLY_SLOS & set(self.slo)):
            raise ValueError(f"SLO {', '.join(sorted(bad))} needs a streaming endpoint (answer or chat with streaming)")

    @property
    def open_loop(self) -> bool:
        return bool(self.rate)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.endpoint}-{'open' if self.open_loop else 'closed'}"

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("benchmarks/results/load") / self.run_name


# -------------------------------------------------------------------------------------------------- engine
def arrival_times(
    rate: float, *, seed: int, warmup_s: float, duration_s: float | None, requests: int | None
) -> list[float]:
    """Poisson arrivals (seconds from the level's start): all in ``[0, warmup_s)``, then ``requests`` of them or
    those before ``warmup_s + duration_s``."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    t = 0.0
    measured = 0
    while True:
        t += float(rng.exponential(1.0 / rate))
        if t >= warmup_s:
            if duration_s is not None and t >= warmup_s + duration_s:
                break
            if requests is not None and measured >= requests:
                break
            measured += 1
        times.append(t)
    return times


class _Level:
    """One level (one concurrency or one rate) of a run."""

    def __init__(self, s: LoadSettings, workload: Workload, bodies: Sequence[bytes], label: str) -> None:
        self.s = s
        self.workload = workload
        self.bodies = bodies
        self.label = label
        self.records: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.transport: Transport | None = None

    async def _one(self, idx: int, phase: str, t_sched: float | None = None) -> dict[str, Any]:
        assert self.transport is not None
        w = self.workload
        parser = w.parser()
        qi = idx % len(self.bodies)
        start = time.perf_counter()
        status: int | None = None
        try:
            async with asyncio.timeout(self.s.timeout_s):
                status = await self.transport.post(w.path, self.bodies[qi], parser, w.stream)
        except TimeoutError:
            parser.error = f"timeout: no complete answer within {self.s.timeout_s} s"
        except Exception as e:  # connection refused/reset, bad chunking, ...: counted, never fatal
            parser.error = f"{type(e).__name__}: {str(e)[:200]}"
        end = time.perf_counter()
        times = parser.token_times
        error = parser.error
        if error is None and status == 200 and w.stream and not times:
            error = "empty_stream: no text delta in the stream"
        rec: dict[str, Any] = {
            "run": self.label,
            "i": idx,
            "phase": phase,
            "query": qi,
            "t_sched": None if t_sched is None else round(t_sched, 6),
            "t_start": round(start - self.t0, 6),
            "t_end": round(end - self.t0, 6),
            "lag_ms": None if t_sched is None else round((start - self.t0 - t_sched) * 1e3, 3),
            "status": status,
            "error": error,
            "latency_ms": round((end - start) * 1e3, 3),
            "ttft_ms": round((times[0] - start) * 1e3, 3) if times else None,
            "itl_ms": [round((b - a) * 1e3, 3) for a, b in itertools.pairwise(times)],
            "tokens": None,
            "tokens_source": None,
            "n_results": parser.n_results,
        }
        if parser.usage_tokens is not None:
            rec["tokens"], rec["tokens_source"] = parser.usage_tokens, "usage"
        elif w.stream:
            rec["tokens"], rec["tokens_source"] = len(times), "deltas"
        self.records.append(rec)
        return rec

    async def closed(self, concurrency: int) -> None:
        s = self.s
        t_warm = self.t0 + s.warmup_s
        stop_at = t_warm + s.duration_s if s.duration_s is not None else math.inf
        counter = 0
        measured = 0

        async def worker() -> None:
            nonlocal counter, measured
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                phase = "warmup" if now < t_warm else "measure"
                if phase == "measure":
                    if s.requests is not None and measured >= s.requests:
                        return
                    measured += 1
                idx = counter
                counter += 1
                await self._one(idx, phase)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def open(self, rate: float, seed: int) -> int:
        """Run the arrivals; returns how many measured arrivals were dropped over the in-flight cap."""
        s = self.s
        arrivals = arrival_times(rate, seed=seed, warmup_s=s.warmup_s, duration_s=s.duration_s, requests=s.requests)
        tasks: set[asyncio.Task[Any]] = set()
        dropped = 0
        for idx, t in enumerate(arrivals):
            delay = self.t0 + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            phase = "warmup" if t < s.warmup_s else "measure"
            if len(tasks) >= s.max_in_flight:
                now = time.perf_counter() - self.t0
                self.records.append(
                    {"run": self.label, "i": idx, "phase": phase, "t_sched": round(t, 6), "t_start": round(now, 6),
                     "dropped": True, "status": None, "error": "over_cap: max_in_flight requests outstanding"}
                )  # fmt: skip
                dropped += phase == "measure"
                continue
            task = asyncio.create_task(self._one(idx, phase, t))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        return dropped

    async def run(self, concurrency: int | None, rate: float | None, seed: int) -> dict[str, Any]:
        pool = concurrency or self.s.max_in_flight
        async with TRANSPORTS[self.s.client](self.s.url, pool) as transport:
            self.transport = transport
            # The generator's own pauses would be measured as the server's latency: Python's cyclic GC walks every
            # live object (the records of earlier levels included) and stalled a 600 req/s level by ~0.5 s. It is
            # off while a level runs and catches up after it.
            gc.collect()
            gc.disable()
            try:
                cpu0 = time.process_time()
                self.t0 = time.perf_counter()
                dropped = await self.open(rate, seed) if rate else await self.closed(concurrency or 1) or 0
                wall = time.perf_counter() - self.t0
                cpu = time.process_time() - cpu0
            finally:
                gc.enable()
                gc.collect()
        measured = [r for r in self.records if r["phase"] == "measure" and not r.get("dropped")]
        if measured:
            first = min(r["t_sched"] if r["t_sched"] is not None else r["t_start"] for r in measured)
            window = max(r["t_end"] for r in measured) - first
        else:
            window = 0.0
        summary = summarize(measured, window_s=window, slo=self.s.slo, dropped=dropped)
        n_all = sum(1 for r in self.records if not r.get("dropped"))
        lag_p99 = summary["schedule_lag_ms"]["p99"]
        client = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_util": round(cpu / wall, 3) if wall else None,
            "requests_sent": n_all,
            "cpu_ms_per_request": round(cpu / n_all * 1e3, 4) if n_all else None,
            "saturated": bool(
                (wall and cpu / wall > SATURATED_CPU) or (lag_p99 is not None and lag_p99 > SATURATED_LAG_MS)
            ),
        }
        return {
            "label": self.label,
            "loop": "open" if rate else "closed",
            "concurrency": concurrency,
            "rate_rps": rate,
            "warmup_requests": sum(1 for r in self.records if r["phase"] == "warmup" and not r.get("dropped")),
            **summary,
            "client": client,
        }


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "processor": platform.processor() or platform.machine(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["processor"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return info


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def client_versions(client: str, loop_name: str) -> dict[str, Any]:
    from importlib import metadata

    return {"http": f"{client} {metadata.version(client)}", "loop": loop_name}


def run_load(s: LoadSettings, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every level of ``s``; write ``records.jsonl``, ``summary.json``, ``summary.md`` and the plots into
    ``s.out_dir``; return the summary."""
    from mmrag.bench import report

    s.validate()
    log = log or (lambda _msg: None)
    queries = load_queries(s.queries_file)
    workload = make_workload(
        s.endpoint,
        stream=s.stream,
        k=s.k,
        collection=s.collection,
        mode=s.mode,
        model=s.model,
        max_tokens=s.max_tokens,
        extra_body=s.extra_body,
    )
    bodies = workload.bodies(queries)
    factory, loop_name = event_loop_factory(s.loop)
    out = s.out_dir
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    levels: list[tuple[int | None, float | None]] = [(c, None) for c in s.concurrency] + [(None, r) for r in s.rate]
    summary: dict[str, Any] = {
        "benchmark": "load",
        "name": s.run_name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": s.command,
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        "client": client_versions(s.client, loop_name),
        "target": {"url": s.url, **workload.describe(), "queries": len(queries), "queries_file": s.queries_file},
        "settings": {
            k: v for k, v in asdict(s).items() if k not in ("url", "endpoint", "command", "out", "name", "slo")
        },
        "slo": s.slo,
        "runs": [],
    }
    with records_path.open("w") as f, asyncio.Runner(loop_factory=factory) as runner:
        for i, (c, r) in enumerate(levels):
            label = f"c={c}" if c else f"rate={r:g}/s"
            log(
                f"{label}: warm-up {s.warmup_s:g} s, then "
                + (f"{s.duration_s:g} s" if s.duration_s else f"{s.requests} requests")
            )
            level = _Level(s, workload, bodies, label)
            result = runner.run(level.run(c, r, s.seed + i))
            for rec in sorted(level.records, key=lambda x: x["i"]):  # in the order they were sent
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            summary["runs"].append(result)
            log(report.one_line(result))
    summary["load_average"]["end"] = load_average()
    summary["files"] = report.write_outputs(summary, out, plots=s.plots, records_path=records_path)
    return summary
