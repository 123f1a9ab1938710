"""``mmrag eval``: retrieval (and answer) quality against relevance judgements, in-process or against a server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmrag.cli.common import CollectionOpt, DbOpt, JsonOpt, ProfileOpt, console, error_exit, with_db


def eval_cmd(
    queries: Annotated[
        Path | None, typer.Option("--queries", "-q", help="queries.jsonl: {id, query[, answer, kind]} a line.")
    ] = None,
    qrels: Annotated[
        Path | None,
        typer.Option(
            "--qrels", help="qrels.jsonl: {query_id, relevance, item_id | source + page | source + start_s/end_s}."
        ),
    ] = None,
    collection: CollectionOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="Evaluate a running server instead of in-process.")] = None,
    runs: Annotated[
        str | None,
        typer.Option(
            "--runs",
            help="Comma-separated runs: visual, bm25, dense, fused, fused+rerank, default (all by default), "
            "or NAME=MODE[:true|false|default].",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Hits per search (the @10 metrics need 10).")] = 10,
    out: Annotated[Path | None, typer.Option("--out", help="Write eval.json and eval.md into this folder.")] = None,
    answers: Annotated[
        bool, typer.Option("--answers", help="Also score /v1/answer (cited precision, token F1); needs --url.")
    ] = False,
    import_vidore: Annotated[
        Path | None,
        typer.Option(
            "--import-vidore",
            help="Convert a ViDoRe/BEIR dataset folder (or parquet) into queries.jsonl + qrels.jsonl in --out, "
            "then stop.",
        ),
    ] = None,
    db: DbOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score retrieval quality against relevance judgements: nDCG@5/10, recall@5/10, MRR@10 and latency per
    run (search mode + rerank), in-process or against a server (--url)."""
    from mmrag.eval import EvalInputError, markdown, parse_runs, run_eval, write_report

    if import_vidore is not None:
        from mmrag.eval.vidore import import_vidore as convert

        if out is None:
            raise error_exit(ValueError("--import-vidore needs --out DIR for the converted files"))
        try:
            info = convert(import_vidore, out)
        except (EvalInputError, OSError) as e:
            raise error_exit(e) from e
        if as_json:
            typer.echo(json.dumps(info))
        else:
            typer.echo(
                f"wrote {info['queries']} ({info['n_queries']} queries) and {info['qrels']} ({info['n_qrels']} qrels)"
            )
            if info["corpus"]:
                typer.echo(f"ingest the images first: mmrag ingest {info['corpus']}")
        return
    if queries is None or qrels is None:
        raise error_exit(ValueError("give --queries and --qrels (or --import-vidore DIR --out OUT)"))
    if answers and not url:
        raise error_exit(ValueError("--answers needs a server with a generator: give --url"))
    try:
        specs = parse_runs(runs)
    except ValueError as e:
        raise error_exit(e) from e
    cfg = with_db(profile, db) if url is None or profile or db else None
    try:
        report = run_eval(
            queries,
            qrels,
            cfg=cfg,
            url=url,
            collection=collection,
            runs=specs,
            k=k,
            answers=answers,
            argv=sys.argv[1:],
            progress=lambda msg: console.print(msg, highlight=False, markup=False),
        )
    except ValueError as e:  # EvalInputError included: it names the file and line
        raise error_exit(e) from e
    if out is not None:
        md = write_report(report, out / "eval.json")
        console.print(f"wrote {out / 'eval.json'} and {md}", highlight=False)
    if as_json:
        typer.echo(json.dumps(report, default=str))
    else:
        typer.echo(markdown(report))


__all__ = ["eval_cmd"]
