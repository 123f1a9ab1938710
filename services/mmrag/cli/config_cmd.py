"""``mmrag config show | validate | schema``: the effective config tree, a file checked against it, its JSON schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from mmrag.cli.common import JsonOpt, ProfileOpt, config_or_exit
from mmrag.config import MmragConfig

config_app = typer.Typer(help="Show, validate and describe the config tree.", no_args_is_help=True)


@config_app.command("show")
def config_show(profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective config: profile + MMRAG_* environment overrides, validated."""
    cfg = config_or_exit(profile)
    data = cfg.model_dump(mode="json")
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))


@config_app.command("validate")
def config_validate(path: Annotated[Path, typer.Argument(help="YAML file holding an mmrag config tree.")]) -> None:
    """Validate a config file; exit 2 with the bad fields named when it does not validate."""
    cfg = config_or_exit(str(path))
    typer.echo(f"ok: {path} is a valid mmrag config (profile {cfg.profile})")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the config tree (every field with its description)."""
    typer.echo(json.dumps(MmragConfig.model_json_schema(), indent=2))


__all__ = ["config_app"]
