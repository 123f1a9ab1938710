"""``mmrag bench``: load, selftest, ingest, retrieval.

Only typer is imported here; each command imports what it runs.
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

bench_app = typer.Typer(help="Benchmarks: load, harness self-test, ingestion, retrieval.", no_args_is_help=True)
console = Console(stderr=True)
DEFAULT_DURATION_S = 30.0


def _fail(msg: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}", highlight=False)
    return typer.Exit(code)


def _levels(text: str | None, kind: type, opt: str) -> list[Any]:
    if not text:
        return []
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise _fail(f"{opt} takes comma-separated numbers, e.g. {opt} 1,2,4 (got {text!r})") from e


def _command() -> str:
    return "mmrag " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("mmrag") else shlex.join(sys.argv)


@bench_app.command("load")
def load(
    url: Annotated[str, typer.Option("--url", help="Base URL of the server, e.g. http://127.0.0.1:8000.")],
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="search, answer or chat.")] = "search",
    concurrency: Annotated[
        str | None, typer.Option("--concurrency", "-c", help="Closed loop: comma-separated concurrency levels.")
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", "-r", help="Open loop: comma-separated Poisson arrival rates (req/s).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help=f"Measured seconds per level (default {DEFAULT_DURATION_S:g}).")
    ] = None,
    requests: Annotated[int | None, typer.Option("--requests", "-n", help="Measured requests per level.")] = None,
    warmup: Annotated[float, typer.Option("--warmup", help="Warm-up seconds per level, left out of stats.")] = 2.0,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help="One query per line, or JSONL with a 'query' field and body fields."),
    ] = None,
    slo: Annotated[
        str | None, typer.Option("--slo", help="Goodput SLOs in ms: latency_ms=2000,ttft_ms=500,itl_ms=50.")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", help="k (chat: in the mmrag field; default: the server's).")] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", help="Collection to search (chat: in the mmrag field).")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="Search mode: visual, text or hybrid.")] = None,
    model: Annotated[str, typer.Option("--model", help="Model name sent to /v1/chat/completions.")] = "mmrag",
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="max_tokens for answer/chat.")] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Ask answer/chat for one JSON body.")] = False,
    extra_body: Annotated[
        str | None, typer.Option("--extra-body", help="JSON merged into every body; null drops a key: '{\"k\": 3}'.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request timeout, seconds.")] = 60.0,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", help="Open loop: cap on outstanding requests (beyond: dropped).")
    ] = 512,
    client: Annotated[
        str, typer.Option("--client", help="HTTP client: aiohttp (faster, measured) or httpx.")
    ] = "aiohttp",
    loop: Annotated[
        str, typer.Option("--loop", help="Event loop: auto (uvloop if installed), asyncio, uvloop.")
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the open-loop arrival times.")] = 0,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default ENDPOINT-closed|open).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default benchmarks/results/load/NAME).")
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary JSON on stdout.")] = False,
) -> None:
    """Load-test a running server: closed loop (--concurrency) or open loop (--rate), with per-request records,
    a summary (throughput, p50/p90/p99, TTFT/ITL, errors by status, goodput) and plots."""
    from mmrag.bench.load import LoadSettings, run_load
    from mmrag.bench.stats import parse_slo

    try:
        extra = json.loads(extra_body) if extra_body else {}
        if not isinstance(extra, dict):
            raise ValueError("--extra-body must be a JSON object")
        settings = LoadSettings(
            url=url,
            endpoint=endpoint,
            concurrency=_levels(concurrency, int, "--concurrency"),
            rate=_levels(rate, float, "--rate"),
            duration_s=duration if duration is not None or requests is not None else DEFAULT_DURATION_S,
            requests=requests,
            warmup_s=warmup,
            timeout_s=timeout,
            max_in_flight=max_in_flight,
            seed=seed,
            client=client,  # type: ignore[arg-type]
            loop=loop,  # type: ignore[arg-type]
            queries_file=str(queries) if queries else None,
            stream=not no_stream,
            k=k,
            collection=collection,
            mode=mode,
            model=model,
            max_tokens=max_tokens,
            extra_body=extra,
            slo=parse_slo(slo),
            name=name,
            out=str(out) if out else None,
            command=_command(),
            plots=not no_plots,
        )
        if endpoint not in ("search", "answer", "chat"):
            raise ValueError(f"--endpoint must be search, answer or chat, not {endpoint!r}")
        if loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"--loop must be auto, asyncio or uvloop, not {loop!r}")
        settings.validate()
    except ValueError as e:  # json.JSONDecodeError is a ValueError too
        raise _fail(str(e)) from e
    try:
        summary = run_load(settings, log=lambda m: console.print(m, highlight=False, markup=False))
    except ValueError as e:
        raise _fail(str(e)) from e
    if as_json:
        typer.echo(json.dumps(summary))
    console.print(f"wrote {settings.out_dir}/ (records.jsonl, summary.json, summary.md, plots)", highlight=False)


@bench_app.command("selftest")
def selftest(
    seconds: Annotated[float, typer.Option("--seconds", help="Measured seconds per level.")] = 5.0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Closed-loop concurrency.")] = 32,
    rate: Annotated[float, typer.Option("--rate", help="Open-loop arrival rate for the lag check (req/s).")] = 1000.0,
    clients: Annotated[str, typer.Option("--clients", help="HTTP clients to compare.")] = "aiohttp,httpx",
    endpoints: Annotated[str, typer.Option("--endpoints", help="Endpoints of the trivial server.")] = "search,chat",
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("benchmarks/results/load/selftest"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary JSON on stdout.")] = False,
) -> None:
    """Measure the harness's own ceiling against a trivial local server (started in a subprocess)."""
    from mmrag.bench.selftest import selftest as run_selftest

    result = run_selftest(
        seconds=seconds,
        concurrency=concurrency,
        rate=rate,
        clients=[c for c in clients.split(",") if c],
        endpoints=[e for e in endpoints.split(",") if e],
        out=out,
        command=_command(),
        log=lambda m: console.print(m, highlight=False, markup=False),
    )
    if as_json:
        typer.echo(json.dumps(result))
    console.print(f"wrote {out}/summary.json and summary.md", highlight=False)


@bench_app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Output directories (or summary.json files) of bench load runs.")],
    out: Annotated[Path, typer.Option("--out", help="Where compare.md/.json/.png go.")] = Path(
        "benchmarks/results/load/compare"
    ),
    label: Annotated[
        list[str] | None, typer.Option("--label", help="A label per run, in order (default: run names).")
    ] = None,
) -> None:
    """Put load runs side by side (e.g. 1 vs 2 retriever replicas): a table and latency-vs-throughput lines."""
    from mmrag.bench.report import compare as run_compare

    try:
        run_compare(runs, out, label)
    except ValueError as e:
        raise _fail(str(e)) from e
    console.print(f"wrote {out}/compare.md, compare.json, compare.png", highlight=False)


def _benchmark_main(module: str) -> Any:
    """``benchmarks.<module>.main``. benchmarks/ is a package at the root of an mmrag checkout, not in the wheel:
    import it from the current directory, and say so clearly when that is not a checkout."""
    root = Path.cwd()
    if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module(f"benchmarks.{module}")
    except ModuleNotFoundError as e:
        if e.name not in ("benchmarks", f"benchmarks.{module}"):
            raise
        raise _fail(
            f"benchmarks.{module} is not importable from {root}: the benchmarks live in the repository "
            "(benchmarks/ at its root), not in the installed package. Run this from the root of an mmrag checkout, "
            f"or there: python -m benchmarks.{module}"
        ) from e
    return mod.main


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@bench_app.command("ingest", context_settings=_PASS_THROUGH, add_help_option=False)
def ingest(ctx: typer.Context) -> None:
    """Ingestion benchmark (python -m benchmarks.ingest; arguments pass through, --help lists them)."""
    raise typer.Exit(_benchmark_main("ingest")(list(ctx.args)) or 0)


@bench_app.command("retrieval", context_settings=_PASS_THROUGH, add_help_option=False)
def retrieval(ctx: typer.Context) -> None:
    """Retrieval benchmark (python -m benchmarks.retrieval; arguments pass through, --help lists them)."""
    raise typer.Exit(_benchmark_main("retrieval")(list(ctx.args)) or 0)
