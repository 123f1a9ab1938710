"""``mmrag demo``: the main job on the embedded default, from offline models to a cited answer, then a clean stop."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any

import typer

from mmrag.cli.common import JsonOpt, ProfileOpt, config_or_exit


def _json_channel() -> Any:
    """A file on the real stdout for the one JSON document, with file descriptor 1 pointed at stderr for the
    rest of the process: vLLM's and Ray's loggers (and their exit handlers) write to stdout."""
    import os

    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


def demo(
    profile: ProfileOpt = None,
    question: Annotated[str | None, typer.Option("--question", "-q", help="What to ask.")] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Store for the demo (default: $MMRAG_HOME/demo/lancedb).")
    ] = None,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="Keep the app up after the answer until Ctrl-C.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Ray's, Serve's and vLLM's own output here, not in a log file.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The main job on the embedded default: prepare the offline models, ingest the bundled sample PDF and video,
    serve the app on a local Ray, ask a question, print the cited answer, shut down."""
    from rich.console import Console

    from mmrag.client import ServerError, describe_citation
    from mmrag.demo import (
        DEFAULT_QUESTION,
        NOISE_NOTICE,
        SMALL_MODEL_NOTICE,
        default_log_path,
        describe_models,
        generator_is_noise,
        output_to_log,
        run_demo,
    )
    from mmrag.lifetime import guarded

    cfg = config_or_exit(profile)
    json_out = _json_channel() if as_json else None  # the only way to the real stdout from here on
    log_path = None if verbose else default_log_path()
    with contextlib.ExitStack() as stack:
        # first in, last out: its reaper keeps the real stderr, and nothing the demo started outlives it
        guard = stack.enter_context(guarded(cfg.server.stop_timeout_s))
        out, err = (sys.stdout, sys.stderr) if log_path is None else stack.enter_context(output_to_log(log_path))
        term = Console(file=err, highlight=False, soft_wrap=True)

        def say(line: str) -> None:
            term.print(line, markup=False)

        guard.say = say

        def on_token(text: str) -> None:
            if not as_json:
                out.write(text)
                out.flush()

        def block(url: str) -> None:
            say(f"serving on {url} (try: mmrag ask 'QUESTION' --url {url} -c demo); Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                import threading

                threading.Event().wait()

        noise = generator_is_noise(cfg)
        for line in describe_models(cfg):
            say(line)
        if cfg.generator.engine == "vllm":
            say("note: " + (NOISE_NOTICE if noise else SMALL_MODEL_NOTICE))
        if log_path is not None:
            say(f"Ray, Serve and vLLM output: {log_path} and Ray's session logs (--verbose shows it here)")
        if not as_json:
            say("")
        try:
            result = run_demo(
                cfg,
                db=db,
                question=question or DEFAULT_QUESTION,
                say=say,
                on_token=on_token,
                keep_serving=block if keep_serving else None,
            )
        except (ServerError, ValueError, RuntimeError) as e:
            term.print(f"[red]error:[/red] {e}", markup=True)
            if log_path is not None:
                say(f"(details in {log_path})")
            raise typer.Exit(1) from e
        say("shut down: the app and the local Ray are stopped")
    if json_out is not None:
        doc = {
            "question": result.question,
            **result.answer,
            "ingest": result.ingest,
            "seconds": result.seconds,
            "generator_is_noise": noise,
            "models": describe_models(cfg),
            "log": str(log_path) if log_path else None,
        }
        json_out.write(json.dumps(doc) + "\n")
        json_out.flush()
        return
    typer.echo("\n\nSources:")
    for c in result.answer["citations"]:
        typer.echo("  " + describe_citation(c))
    if noise:
        typer.echo(
            "\n(The answer above comes from a tiny random-weight model: its words are noise. See the note above.)"
        )


__all__ = ["demo"]
