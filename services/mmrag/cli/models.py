"""``mmrag models build | build-tiny``: the offline model checkpoints a profile needs, made on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmrag.cli.common import JsonOpt, ProfileOpt, config_or_exit, console

models_app = typer.Typer(help="Build and inspect model checkpoints.", no_args_is_help=True)


@models_app.command("build-tiny")
def models_build_tiny(
    out: Annotated[Path | None, typer.Option("--out", help="Target directory (default: models.tiny_dir).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a verified build exists.")] = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the tiny random-weight checkpoints offline (idempotent): ColQwen2, Qwen2-VL and a cross-encoder
    (local-cpu), and the gpu profile's architectures for gpu-tiny: a ColQwen2.5 LoRA adapter over its base, and a
    Qwen2.5-VL."""
    from mmrag.models.tiny import build_tiny

    target = out or Path(config_or_exit(profile).models.tiny_dir)
    with console.status(f"building tiny checkpoints in {target} ..."):
        report = build_tiny(target, force=force)
    if as_json:
        typer.echo(json.dumps(report))
        return
    for name, info in report.items():
        typer.echo(f"{name:16} {info['status']:8} {info['path']}")


@models_app.command("build")
def models_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a verified build exists.")] = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prepare every offline model the profile needs (idempotent): the tiny random-weight checkpoints and the real
    ones converted from installed packages (real:smollm2-135m-instruct), into models.tiny_dir / models.real_dir."""
    from mmrag.models.prepare import prepare_models

    cfg = config_or_exit(profile)
    try:
        with console.status("preparing models ..."):
            report = prepare_models(cfg, force=force)
    except (RuntimeError, ValueError) as e:  # a missing package: the message names it and the install command
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
    if as_json:
        typer.echo(json.dumps(report))
        return
    for info in report:
        typer.echo(f"{info['model']:32} {info['kind']:22} {info['path']}")


__all__ = ["models_app"]
