"""One call for ``mmrag eval`` and ``benchmarks/quality.py``: load, check, search, score, describe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmrag.eval.data import Catalog, Qrel, Query, load_qrels, load_queries, resolve_qrels
from mmrag.eval.report import config_summary, environment
from mmrag.eval.runner import DEFAULT_RUNS, HttpSearcher, RunSpec, evaluate, evaluate_answers

__all__ = ["load_inputs", "run_eval"]


def load_inputs(
    queries_path: str | Path, qrels_path: str | Path, *, store: Any = None, collection: str | None = None
) -> tuple[list[Query], list[Qrel]]:
    """Read and check queries and qrels; with a store, resolve every qrel against ``collection``'s documents."""
    queries = load_queries(queries_path)
    qrels = load_qrels(qrels_path, queries)
    if store is not None:
        if collection not in store.collections():
            raise ValueError(f"no collection named {collection!r} in {store.uri}")
        resolve_qrels(qrels, Catalog.from_store(store, collection))
    return queries, qrels


def run_eval(
    queries_path: str | Path,
    qrels_path: str | Path,
    *,
    cfg: Any = None,
    url: str | None = None,
    collection: str | None = None,
    runs: Sequence[RunSpec] = DEFAULT_RUNS,
    k: int = 10,
    answers: bool = False,
    answer_url: str | None = None,
    searcher: Any = None,
    argv: Sequence[str] | None = None,
    prog: str = "mmrag eval",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``runs`` on a query set: in-process on ``cfg``'s store (a :class:`mmrag.search.LocalSearcher`,
    unless ``searcher`` is given), or against the server at ``url``. In-process, every qrel is checked against the
    collection first (unknown sources or item ids, pages beyond a document); against a server only what the
    answers show can be checked. ``answers`` also asks ``/v1/answer`` of ``answer_url`` (default ``url``).

    Raises :class:`mmrag.eval.data.EvalInputError` (a ``ValueError``) on bad input, naming file and line.
    """
    say = progress or (lambda _msg: None)
    report: dict[str, Any] = {"environment": environment(argv, prog)}
    report["inputs"] = {"queries": str(queries_path), "qrels": str(qrels_path)}
    queries, qrels = load_inputs(queries_path, qrels_path)  # bad input fails before anything heavy loads
    if url is None:
        if cfg is None:
            raise ValueError("give a config (in-process) or a server URL")
        if searcher is None:
            from mmrag.search import LocalSearcher

            searcher = LocalSearcher(cfg)
        collection = collection or cfg.store.default_collection
        store = getattr(searcher, "store", None)
        if store is not None:
            if collection not in store.collections():
                raise ValueError(f"no collection named {collection!r} in {cfg.store.uri}")
            resolve_qrels(qrels, Catalog.from_store(store, collection))
        report["config"] = config_summary(cfg, collection)
        report["mode"] = "in-process"
    else:
        searcher = searcher or HttpSearcher(url)
        report["url"] = url
        report["mode"] = "server"
        report["server"] = searcher.info() if hasattr(searcher, "info") else {}
        if cfg is not None:
            report["config"] = {"note": "the client's profile; the server's may differ", **config_summary(cfg)}
    say(f"{len(queries)} queries, {len(qrels)} qrels; runs: {', '.join(r.name for r in runs)}")
    report.update(evaluate(queries, qrels, searcher, runs, k=k, collection=collection, progress=progress))
    if answers:
        target = answer_url or url
        if target is None:
            raise ValueError("--answers needs a server with a generator: give --url")
        say(f"asking {target}/v1/answer ...")
        report["answers"] = evaluate_answers(queries, qrels, target, collection=collection, progress=progress)
    return report
