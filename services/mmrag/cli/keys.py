"""``mmrag keys create | list | revoke``: API keys scoped to collections (see :mod:`mmrag.auth.keys`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

keys_app = typer.Typer(
    help="API keys for server.auth: required (scoped to collections; stored as a slow hash).", no_args_is_help=True
)
console = Console(stderr=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="LanceDB URI (overrides store.uri).", show_default=False)]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Profile name or YAML path.", show_default=False),
]


def _keys(profile: str | None, db: str | None):
    from mmrag.auth.keys import KeyStore
    from mmrag.cli.common import with_db
    from mmrag.store import LanceStore

    return KeyStore(LanceStore.from_config(with_db(profile, db).store))


def _fail(e: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
    return typer.Exit(2)


@keys_app.command("create")
def keys_create(
    collection: Annotated[
        list[str],
        typer.Option("--collection", "-c", help="A collection the key may read (repeat; '*' for every collection)."),
    ],
    scope: Annotated[str, typer.Option("--scope", help="read, write or admin.")] = "read",
    rate: Annotated[
        float | None, typer.Option("--rate", help="Requests per second this key may make (default: no limit).")
    ] = None,
    tokens_per_min: Annotated[
        int | None, typer.Option("--tokens-per-min", help="Generated tokens per minute (default: no limit).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label shown by mmrag keys list.")] = "",
    expires: Annotated[float | None, typer.Option("--expires", help="Days until the key stops working.")] = None,
    db: DbOpt = None,
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the key and its record as JSON.")] = False,
) -> None:
    """Create a key and print it, this once (only its hash is kept)."""
    from mmrag.auth.keys import KeyRequestError

    try:
        key, rec = _keys(profile, db).create(
            collection,
            scope=scope,  # type: ignore[arg-type]
            name=name,
            expires_days=expires,
            rate_per_s=rate,
            tokens_per_min=tokens_per_min,
        )
    except KeyRequestError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps({"key": key, **rec.public()}))
        return
    typer.echo(key)
    console.print(
        f"key id {rec.key_id}, scope {rec.scope}, collections {rec.public()['collections']}"
        + (f", expires {rec.expires_at:%Y-%m-%d %H:%M} UTC" if rec.expires_at else "")
        + ". Store the key now: it is not shown again.",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(
    db: DbOpt = None,
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every key's id, name, collections, scope, limits and status (never the key)."""
    rows = [r.public() for r in sorted(_keys(profile, db).records().values(), key=lambda r: r.created_at)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        console.print("no keys (mmrag keys create makes one)")
    for r in rows:
        colls = r["collections"] if r["collections"] == "*" else ",".join(r["collections"])
        limits = ", ".join(
            f"{v} {u}" for v, u in ((r["rate_per_s"], "req/s"), (r["tokens_per_min"], "tokens/min")) if v is not None
        )
        typer.echo(
            f"{r['key_id']}  {r['status']:<8} {r['scope']:<6} {colls}  {r['name'] or '-'}"
            + (f"  [{limits}]" if limits else "")
            + (f"  expires {r['expires_at']}" if r["expires_at"] else "")
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (mmrag keys list).")],
    db: DbOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Revoke a key: every gateway replica refuses it within 5 s."""
    from mmrag.auth.keys import KeyRequestError

    try:
        rec = _keys(profile, db).revoke(key_id)
    except KeyRequestError as e:
        raise _fail(e) from e
    typer.echo(f"revoked {rec.key_id} at {rec.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
