"""Retrieval- and answer-quality evaluation (``mmrag eval``, ``benchmarks/quality.py``).

Inputs are BEIR/ViDoRe-style JSONL (:mod:`mmrag.eval.data`); hits are judged by the rules in
:mod:`mmrag.eval.matching`; the maths is in :mod:`mmrag.eval.metrics`; :mod:`mmrag.eval.runner` runs named
settings (search mode + rerank flag) through any searcher; :mod:`mmrag.eval.report` writes JSON and Markdown;
:mod:`mmrag.eval.vidore` converts ViDoRe/BEIR datasets. Importing this package starts nothing.
"""

from mmrag.eval.data import EvalInputError, Qrel, Query, load_qrels, load_queries
from mmrag.eval.harness import load_inputs, run_eval
from mmrag.eval.report import check_targets, markdown, write_report
from mmrag.eval.runner import DEFAULT_RUNS, RunSpec, evaluate, parse_runs

__all__ = [
    "DEFAULT_RUNS",
    "EvalInputError",
    "Qrel",
    "Query",
    "RunSpec",
    "check_targets",
    "evaluate",
    "load_inputs",
    "load_qrels",
    "load_queries",
    "markdown",
    "parse_runs",
    "run_eval",
    "write_report",
]
