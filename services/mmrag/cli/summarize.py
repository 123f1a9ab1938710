"""``mmrag summarize VIDEO_OR_DOC_ID``: a running server's summary of a video, with timestamped chapters.

A 32-hex-character argument that is not a file is a document id. A path is resolved to its document through the
store (the profile's ``store.uri`` or ``--db``): by the file's content hash (so a video ingested from another path
or uploaded is found too), else by its path, to say that it changed since it was ingested.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mmrag.cli.remote import ENV_KEY

DOC_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class NotIngested(LookupError):
    """The video is not in the store (the message says what to do)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_doc_id(target: str, store: Any, collection: str | None) -> str:
    """The document id ``target`` names: itself, or the ingested video whose bytes the file at ``target`` has.
    Raises :class:`NotIngested` (or FileNotFoundError) with a message saying what to do."""
    from mmrag.store import schema as S
    from mmrag.store import summaries

    path = Path(target).expanduser()
    if DOC_ID_RE.match(target) and not path.exists():
        return target
    if not path.is_file():
        raise FileNotFoundError(f"{target} is neither a file nor a document id (32 lowercase hex characters)")
    docs = [d for d in summaries.documents_by_hash(store, _sha256(path)) if collection in (None, d["collection"])]
    if not docs:
        absolute = str(path.resolve())
        old = [d for d in (store.documents(collection) if store.has_table(S.DOCUMENTS) else [])
               if d["source_uri"] == absolute]  # fmt: skip
        where = f" in collection {collection!r}" if collection else ""
        if old:
            raise NotIngested(
                f"{target} has changed since it was ingested{where} (its content hash differs); re-ingest it: "
                f"mmrag ingest {target}" + (f" -c {collection}" if collection else "")
            )
        raise NotIngested(f"{target} is not ingested{where} in the store at {store.uri}; ingest it first: "
                          f"mmrag ingest {target}" + (f" -c {collection}" if collection else ""))  # fmt: skip
    videos = [d for d in docs if d.get("kind") in summaries.SUMMARY_KINDS]
    if not videos:
        raise NotIngested(f"{target} is ingested as a {docs[0].get('kind')}, not a video: only videos have summaries")
    if len({d["collection"] for d in videos}) > 1:
        names = ", ".join(sorted({d["collection"] for d in videos}))
        raise NotIngested(f"{target} is ingested in several collections ({names}); choose one with --collection")
    return str(videos[0]["doc_id"])


def summarize(
    target: Annotated[str, typer.Argument(help="A video file that was ingested, or its document id.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Server base URL (default: server.host/port of the profile).")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help=f"API key (default: ${ENV_KEY}).", show_default=False)
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="The collection, when the file is in several.")
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="LanceDB URI to resolve a file in (default: store.uri).")
    ] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Make it again even if the server has it.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Profile name or YAML path.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole summary as JSON on stdout.")] = False,
) -> None:
    """Summarise an ingested video through a running server: timestamped chapters (each citing its clips), then
    the whole video, streamed as the generator writes them."""
    from rich.console import Console

    from mmrag.cli.common import config_or_exit
    from mmrag.client import ServerError, clock, describe_chapter
    from mmrag.client import summarize as summarize_server

    console = Console(stderr=True)
    cfg = config_or_exit(profile, {"store": {"uri": db}} if db else None)
    doc_id = target
    if not (DOC_ID_RE.match(target) and not Path(target).exists()):
        from mmrag.store import LanceStore

        try:
            doc_id = resolve_doc_id(target, LanceStore.from_config(cfg.store), collection)
        except (NotIngested, FileNotFoundError) as e:
            console.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(1) from e
    from mmrag.serve.run import base_url

    base = url or base_url(cfg)
    said_summary = False

    def show(event: str, data: dict[str, Any]) -> None:
        nonlocal said_summary
        if event == "chapter":
            typer.echo(describe_chapter(data))
        elif event == "token":
            if not said_summary:
                typer.echo("\nSummary: ", nl=False)
                said_summary = True
            sys.stdout.write(data["text"])
            sys.stdout.flush()

    try:
        out = summarize_server(
            base, doc_id, stream=not as_json, refresh=refresh, key=key or os.environ.get(ENV_KEY),
            on_event=None if as_json else show,
        )  # fmt: skip
    except ServerError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(f"\n\nChapters of {out['source']} ({clock(out['duration_s'])}):")
    for ch in out["chapters"]:
        typer.echo("  " + describe_chapter(ch))
    t = out.get("timings") or {}
    how = "from the cache" if out.get("cached") else f"{out.get('usage', {}).get('calls', 0)} generator calls"
    typer.echo("\n" + ", ".join([how, *(f"{n} {t[n]:.0f} ms" for n in ("first_chapter", "total") if n in t)]))


__all__ = ["NotIngested", "resolve_doc_id", "summarize"]
