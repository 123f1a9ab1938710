"""``mmrag store optimize``: store upkeep (compaction, old-version cleanup, index refresh) under the writer lease."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich.console import Console

store_app = typer.Typer(help="Store upkeep (one writer per store at a time).", no_args_is_help=True)
console = Console(stderr=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="LanceDB URI (overrides store.uri).", show_default=False)]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Profile name or YAML path.", show_default=False),
]
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``1h`` or ``2d``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration; write e.g. 90s, 30m, 1h or 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


@store_app.command("optimize")
def store_optimize(
    db: DbOpt = None,
    profile: ProfileOpt = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Remove table versions superseded longer ago than this (90s, 30m, 1h, 2d; default "
            "store.writer.keep_versions_s). Queries still running on a removed version fail: keep it above the "
            "longest query and above how long any reader stays on one version.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON on stdout.")] = False,
) -> None:
    """Compact small fragments, remove old versions and refresh the indexes of every table in the store. Takes the
    store's writer lease, so it refuses to run while an ingestion (or another optimize) writes the store."""
    from mmrag.cli.common import with_db
    from mmrag.store import LanceStore, StoreError
    from mmrag.store.lease import WriterLease

    cfg = with_db(profile, db)
    keep_s = parse_duration(older_than) if older_than is not None else cfg.store.writer.keep_versions_s
    store = LanceStore.from_config(cfg.store)
    try:
        with WriterLease.from_config(store, cfg.store.writer, purpose="mmrag store optimize") as lease:
            report = store.optimize(keep_versions_s=keep_s, text_ann_min_rows=cfg.store.text_ann_min_rows, lease=lease)
    except StoreError as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from e
    failed = [name for name, t in report["tables"].items() if "error" in t]
    if as_json:
        typer.echo(json.dumps(report))
    else:
        typer.echo(f"optimized {report['uri']} in {report['seconds']:.1f} s (versions older than {keep_s:g} s removed)")
        for name, t in sorted(report["tables"].items()):
            if "error" in t:
                typer.echo(f"  {name}: failed: {t['error']}")
                continue
            (f0, f1), (v0, v1), (r0, r1) = t["fragments"], t["versions"], t["rows"]
            typer.echo(f"  {name}: fragments {f0} -> {f1}, versions {v0} -> {v1}, rows {r0} -> {r1}")
    if failed:
        raise typer.Exit(1)
