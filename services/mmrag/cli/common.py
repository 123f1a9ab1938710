"""What every ``mmrag`` subcommand shares: the stderr console, the common options, and loading the config tree
with a clear exit (code 2) when it does not validate."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from mmrag.config import ConfigError, MmragConfig, load_config

console = Console(stderr=True)

ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", "-p", help="Profile name in deploy/profiles (local-cpu, gpu) or a YAML path.", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="LanceDB URI (overrides store.uri).", show_default=False)]
CollectionOpt = Annotated[
    str | None, typer.Option("--collection", "-c", help="Collection (default: store.default_collection).")
]


def config_or_exit(profile: str | None, overrides: dict[str, Any] | None = None) -> MmragConfig:
    """The profile's config with ``MMRAG_*`` env overrides and ``overrides``; exit 2 naming the bad fields."""
    try:
        return load_config(profile, overrides)
    except ConfigError as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from e


def with_db(profile: str | None, db: str | None) -> MmragConfig:
    """:func:`config_or_exit` with ``--db`` as ``store.uri`` when given."""
    return config_or_exit(profile, {"store": {"uri": db}} if db else None)


def error_exit(e: Exception | str, code: int = 2) -> typer.Exit:
    """Print ``error: ...`` on stderr; the exit to raise."""
    console.print(f"[red]error:[/red] {e}", highlight=False)
    return typer.Exit(code)


__all__ = [
    "CollectionOpt",
    "DbOpt",
    "JsonOpt",
    "ProfileOpt",
    "config_or_exit",
    "console",
    "error_exit",
    "with_db",
]
