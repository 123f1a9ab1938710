"""Retrieval quality: nDCG@5/10, recall@5/10, MRR@10 and latency of every search setting on a committed query set.

    python -m benchmarks.quality [--db DIR] [--runs visual,bm25,...] [--answers] [--out benchmarks/results/quality.json]

What runs: the files listed in ``benchmarks/data/corpus.json`` (``[{"path": repo-relative path, "source": name}]``)
are ingested with the ``local-cpu`` profile into a fresh store in a temporary folder, or into ``--db`` (kept; a
store that already holds every file with the same content is not ingested again, and Ray is not even started).
Then ``benchmarks/data/queries.jsonl`` is searched in-process with every run (:data:`mmrag.eval.DEFAULT_RUNS`:
visual, bm25, dense, fused, fused+rerank, default) and scored against ``benchmarks/data/qrels.jsonl`` by
:mod:`mmrag.eval` (the format and the matching rules are documented there). Writes the JSON report and a Markdown
summary beside it, with the command, date, machine, load average and these targets (nDCG@5), each MET or MISSED:

1. default >= bm25 + 0.05 (what a user gets beats plain BM25);
2. fused >= the best single channel - 0.01 (fusion does not lose to its best input);
3. fused+rerank >= fused (reranking never lowers it).

``--answers`` then serves the whole app on a local Ray (as ``benchmarks/answer.py`` does) and scores
``/v1/answer``: cited precision, answers citing a relevant source, token F1 against the reference answers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"


def _corpus(path: Path) -> list[Path]:
    entries = json.loads(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise SystemExit(f"{path}: expected a list of {{'path': ..., 'source': ...}}")
    files = [(ROOT / e["path"]).resolve() for e in entries]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"{path}: missing files: {', '.join(missing)}")
    return files


def _needs_ingest(cfg: Any, collection: str, files: list[Path]) -> list[Path]:
    """The files the store does not hold yet with their current content."""
    from mmrag.ingest.sources import sha256_and_head
    from mmrag.store import LanceStore

    store = LanceStore.from_config(cfg.store)
    if not store.has_items() or collection not in store.collections():
        return files
    stored = store.current_hashes(collection, [str(f) for f in files])
    return [f for f in files if stored.get(str(f)) != sha256_and_head(str(f))[0]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DATA / "corpus.json", help="the files to ingest")
    ap.add_argument("--queries", type=Path, default=DATA / "queries.jsonl")
    ap.add_argument("--qrels", type=Path, default=DATA / "qrels.jsonl")
    ap.add_argument("--db", help="store to use and keep (default: a fresh one in a temporary folder)")
    ap.add_argument("--collection", default="quality")
    ap.add_argument("--profile", default="local-cpu")
    ap.add_argument("--runs", help="comma-separated runs (default: all); see mmrag eval --help")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--answers", action="store_true", help="also serve the app and score /v1/answer")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from benchmarks.answer import _free_port, log
    from mmrag.config import load_config
    from mmrag.eval import check_targets, load_inputs, parse_runs, run_eval, write_report
    from mmrag.eval.runner import evaluate_answers

    t0 = time.perf_counter()
    runs = parse_runs(args.runs)
    files = _corpus(args.corpus)
    load_inputs(args.queries, args.qrels)  # bad input fails here, before minutes of ingestion
    work = None if args.db else Path(tempfile.mkdtemp(prefix="mmrag-quality-"))
    db = args.db if work is None else str(work / "db")
    cfg = load_config(args.profile, {"store": {"uri": db}, "server": {"port": _free_port()}})
    bench: dict[str, Any] = {"corpus": [str(f.relative_to(ROOT)) for f in files], "db": db if args.db else "(temp)"}
    try:
        todo = _needs_ingest(cfg, args.collection, files)
        if todo:
            from mmrag.ingest.pipeline import ingest

            log(f"ingesting {len(todo)} of {len(files)} files into {db} ...")
            s = ingest([str(f) for f in todo], cfg, collection=args.collection)
            bench["ingest"] = {k: v for k, v in s.to_dict().items() if k != "store"}
            log(f"  {s.pages} pages, {s.clips} clips, {len(s.errors)} errors in {s.seconds:.0f} s")
        else:
            bench["ingest"] = "skipped: the store already holds every file"
            log("every file is already in the store: not ingesting")
        import ray

        if ray.is_initialized():  # ingestion's Ray Data actors would share the cores with the searches
            ray.shutdown()
        report = run_eval(
            args.queries,
            args.qrels,
            cfg=cfg,
            collection=args.collection,
            runs=runs,
            k=args.k,
            argv=argv if argv is not None else sys.argv[1:],
            prog="python -m benchmarks.quality",
            progress=log,
        )
        report["targets"] = check_targets(report)
        from mmrag.store import LanceStore

        report["calibration"] = LanceStore.from_config(cfg.store).calibration(args.collection)
        if args.answers:
            from ray import serve

            from mmrag.serve.run import run_app
            from mmrag.store import LanceStore

            log("deploying the app for --answers ...")
            url = run_app(cfg)
            try:
                queries, qrels = load_inputs(
                    args.queries, args.qrels, store=LanceStore.from_config(cfg.store), collection=args.collection
                )
                report["answers"] = evaluate_answers(queries, qrels, url, collection=args.collection, progress=log)
                report["answers"]["generator"] = cfg.models.generator.model
            finally:
                serve.shutdown()
                ray.shutdown()
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    report["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["benchmark"] = bench | {"seconds": round(time.perf_counter() - t0, 1)}
    md = write_report(report, args.out, title="Retrieval quality benchmark")
    for t in report["targets"]:
        log(f"{t['status']:7} {t['target']}: {t['numbers']}")
    log(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
