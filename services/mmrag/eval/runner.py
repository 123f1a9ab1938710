"""Run named search settings ("runs") over a query set and score them against qrels.

A searcher is anything with ``search(query, *, k, collection, mode, rerank) -> list[hit dict]``:
:class:`mmrag.search.LocalSearcher` in-process, :class:`HttpSearcher` against a server, or a fake in tests.
"""

from __future__ import annotations

import inspect
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmrag.eval import metrics as M
from mmrag.eval.data import EvalInputError, Qrel, Query
from mmrag.eval.matching import Judge, hit_source

__all__ = [
    "DEFAULT_RUNS",
    "METRICS",
    "HttpSearcher",
    "RunSpec",
    "evaluate",
    "evaluate_answers",
    "parse_runs",
    "query_modality",
]

#: Metric names, in report order.
METRICS = ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@10")


@dataclass(frozen=True)
class RunSpec:
    """One setting to evaluate: a search mode (``None``: the server's/profile's default) and the rerank flag
    (``None``: the collection's calibrated default, or the searcher's default where it has no such notion)."""

    name: str
    mode: str | None
    rerank: bool | None

    def describe(self) -> str:
        mode = self.mode or "default mode"
        rr = {True: "rerank", False: "no rerank", None: "default rerank"}[self.rerank]
        return f"{mode}, {rr}"


DEFAULT_RUNS: tuple[RunSpec, ...] = (
    RunSpec("visual", "visual", False),  # the ColPali cascade alone (it ends in exact MaxSim already)
    RunSpec("bm25", "text", False),
    RunSpec("dense", "dense", False),
    RunSpec("fused", "hybrid", False),
    RunSpec("fused+rerank", "hybrid", True),
    RunSpec("default", None, None),  # what a user gets who names neither
)
_BY_NAME = {r.name: r for r in DEFAULT_RUNS}
_RERANK = {"true": True, "on": True, "rerank": True, "false": False, "off": False, "none": None, "default": None}


def parse_runs(spec: str | Iterable[str] | None) -> list[RunSpec]:
    """``visual,bm25,default`` (names of :data:`DEFAULT_RUNS`) or custom ``NAME=MODE[:RERANK]`` entries, RERANK
    one of true/false/default (``mine=hybrid:false``); ``None`` or ``all`` gives every default run."""
    if spec is None:
        return list(DEFAULT_RUNS)
    parts = [p.strip() for s in ([spec] if isinstance(spec, str) else spec) for p in s.split(",") if p.strip()]
    if not parts or parts == ["all"]:
        return list(DEFAULT_RUNS)
    out: list[RunSpec] = []
    for p in parts:
        if "=" in p:
            name, _, rest = p.partition("=")
            mode, _, rr = rest.partition(":")
            if not name or not mode:
                raise ValueError(f"bad run {p!r}: write NAME=MODE[:RERANK], e.g. mine=hybrid:false")
            if rr.lower() not in _RERANK and rr:
                raise ValueError(f"bad run {p!r}: RERANK must be true, false or default, not {rr!r}")
            out.append(RunSpec(name, None if mode == "default" else mode, _RERANK[rr.lower()] if rr else None))
        elif p in _BY_NAME:
            out.append(_BY_NAME[p])
        else:
            raise ValueError(f"unknown run {p!r}: use {', '.join(_BY_NAME)} or NAME=MODE[:RERANK]")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique: {', '.join(names)}")
    return out


# ------------------------------------------------------------------------------------------------ searchers
class UnavailableRun(Exception):
    """The searcher does not offer this run's mode."""


def _is_unknown_mode(e: Exception) -> bool:
    return "unknown search mode" in str(e).lower()


def _accepts_none_rerank(search: Callable[..., Any]) -> bool:
    """Whether ``search(..., rerank=None)`` means 'the default' (``rerank: bool | None = None``)."""
    try:
        p = inspect.signature(search).parameters.get("rerank")
    except (TypeError, ValueError):
        return False
    if p is None:
        return False
    return p.default is None or "None" in str(p.annotation)


def _search_kwargs(search: Callable[..., Any], spec: RunSpec, k: int, collection: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"k": k, "collection": collection, "mode": spec.mode}
    if spec.rerank is not None or _accepts_none_rerank(search):
        kw["rerank"] = spec.rerank  # else leave it out: the searcher's own default is what a user gets
    return kw


class HttpSearcher:
    """``POST {url}/v1/search``, with the search signature of :class:`mmrag.search.LocalSearcher`."""

    def __init__(self, url: str, *, timeout_s: float = 120.0, client: Any = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout_s)

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        collection: str | None = None,
        mode: str | None = None,
        rerank: bool | None = None,
    ) -> list[dict[str, Any]]:
        from mmrag.client import _error_message

        body = {"query": query, "k": k, "collection": collection, "mode": mode, "rerank": rerank}
        r = self.client.post(self.url + "/v1/search", json={n: v for n, v in body.items() if v is not None})
        if r.status_code != 200:
            msg = _error_message(r.content)
            if r.status_code in (400, 422) and mode is not None and msg.startswith("mode"):
                raise ValueError(f"unknown search mode {mode!r} on {self.url}: {msg}")
            raise RuntimeError(f"{self.url}/v1/search: HTTP {r.status_code}: {msg}")
        return [{**h, "source_uri": h.get("source"), "stage_scores": h.get("scores", {})} for h in r.json()["results"]]

    def info(self) -> dict[str, Any]:
        """What the server says about itself (its models), best effort."""
        try:
            r = self.client.get(self.url + "/v1/models")
            return {"models": [m.get("id") for m in r.json().get("data", [])]} if r.status_code == 200 else {}
        except Exception:  # a report detail, never worth failing the run for
            return {}


# ------------------------------------------------------------------------------------------------ scoring
def query_modality(qrels: Sequence[Qrel]) -> str:
    """``page``, ``video``, ``image``, ``mixed`` or ``unknown``, from the query's relevant targets."""
    kinds = {q.modality for q in qrels if q.relevance > 0}
    names = {"page": "page", "clip": "video", "image": "image"}
    if not kinds or None in kinds:
        return "unknown" if not kinds or kinds == {None} else "mixed"
    if len(kinds) > 1:
        return "mixed"
    return names.get(next(iter(kinds)), "unknown")  # type: ignore[arg-type]


def _scores(gains: Sequence[float], qrels: Sequence[Qrel]) -> dict[str, float]:
    grades = [float(q.relevance) for q in qrels if q.relevance > 0]
    return {
        "ndcg@5": M.ndcg_at_k(gains, grades, 5),
        "ndcg@10": M.ndcg_at_k(gains, grades, 10),
        "recall@5": M.recall_at_k(gains, len(grades), 5),
        "recall@10": M.recall_at_k(gains, len(grades), 10),
        "mrr@10": M.mrr_at_k(gains, 10),
    }


def _means(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    out: dict[str, Any] = {m: _round(M.mean(r[m] for r in rows)) for m in METRICS}
    out["n"] = len(rows)
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _item(hit: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        "source": hit_source(hit),
        "modality": hit.get("modality"),
        "page": hit.get("page"),
        "start_s": hit.get("start_s"),
        "end_s": hit.get("end_s"),
    }
    return {n: v for n, v in out.items() if v is not None}


def evaluate(
    queries: Sequence[Query],
    qrels: Sequence[Qrel],
    searcher: Any,
    runs: Sequence[RunSpec] = DEFAULT_RUNS,
    *,
    k: int = 10,
    collection: str | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Search every query with every run, judge the rankings and aggregate.

    Each run first searches the first query once, unmeasured: it loads what the run needs (the encoder, the
    reranker) and finds out whether the searcher offers the mode at all (a run whose mode it rejects as unknown is
    reported ``available: false``). Then the queries are asked in turn, every available run for each query, so that
    drift of a shared machine spreads over all runs alike. A query whose search fails scores 0 and is listed with
    its error. Queries without a positive qrel are left out of every mean and listed in ``excluded``.

    Returns ``{"k", "collection", "runs": [...], "queries": [...], "excluded": [...], "warnings": [...],
    "items": {...}}``: each query's result per run lists its hits as ``[item id, score, credited gain]``, and
    ``items`` says once what each retrieved item is (source, modality, page or clip bounds).
    """
    say = progress or (lambda _msg: None)
    by_query: dict[str, list[Qrel]] = defaultdict(list)
    for q in qrels:
        by_query[q.query_id].append(q)
    judge = Judge(by_query)
    scored = [q for q in queries if any(r.relevance > 0 for r in by_query.get(q.id, ()))]
    excluded = [
        {"id": q.id, "reason": "no qrels" if not by_query.get(q.id) else "no qrel with relevance > 0"}
        for q in queries
        if q not in scored
    ]
    warnings = [f"query {e['id']!r} has {e['reason']}: left out of the means" for e in excluded]
    if k < 10:
        warnings.append(f"k={k} < 10: the @10 metrics only see {k} hits")
    if not scored:
        raise EvalInputError("no query has a relevant qrel: nothing to evaluate")

    run_rows: list[dict[str, Any]] = []
    available: list[RunSpec] = []
    for spec in runs:
        row: dict[str, Any] = {"name": spec.name, "mode": spec.mode, "rerank": spec.rerank, "setting": spec.describe()}
        try:
            t0 = clock()
            searcher.search(scored[0].query, **_search_kwargs(searcher.search, spec, k, collection))
            row["warmup_ms"] = round((clock() - t0) * 1000, 1)
            row["available"] = True
            available.append(spec)
        except Exception as e:
            if not _is_unknown_mode(e):
                raise
            row["available"] = False
            row["unavailable"] = str(e)
            warnings.append(f"run {spec.name!r} unavailable: {e}")
        say(f"run {spec.name} ({spec.describe()}): {'ready' if row['available'] else 'unavailable'}")
        run_rows.append(row)

    per_query: list[dict[str, Any]] = []
    items: dict[str, dict[str, Any]] = {}
    for n, q in enumerate(scored, 1):
        qr = by_query[q.id]
        entry: dict[str, Any] = {
            "id": q.id,
            "query": q.query,
            "kind": q.kind,
            "modality": query_modality(qr),
            "relevant": [{"target": r.target, "relevance": r.relevance} for r in qr if r.relevance > 0],
            "runs": {},
        }
        for spec in available:
            t0 = clock()
            try:
                hits = searcher.search(q.query, **_search_kwargs(searcher.search, spec, k, collection))
                error = None
            except EvalInputError:
                raise
            except Exception as e:  # one failed search must not lose the whole evaluation
                hits, error = [], f"{type(e).__name__}: {e}"
            ms = (clock() - t0) * 1000
            judged = judge.judge(q.id, hits)
            res: dict[str, Any] = {m: _round(v) for m, v in _scores(judged.gains, qr).items()}
            res["latency_ms"] = round(ms, 2)
            if judged.duplicates:
                res["duplicates"] = judged.duplicates
            if error:
                res["error"] = error
            # [item id, score, credited gain] best first; what each item is sits once in the report's "items"
            res["hits"] = [[h.get("id"), _round(h.get("score")), g] for h, g in zip(hits, judged.gains, strict=True)]
            for h in hits:
                items.setdefault(str(h.get("id")), _item(h))
            entry["runs"][spec.name] = res
        per_query.append(entry)
        if n % 10 == 0 or n == len(scored):
            say(f"  {n}/{len(scored)} queries")

    for row in run_rows:
        if not row["available"]:
            continue
        name = row["name"]
        rows = [(e, e["runs"][name]) for e in per_query]
        row["means"] = _means(r for _, r in rows)
        row["latency_ms"] = M.latency_summary([r["latency_ms"] for _, r in rows])
        row["errors"] = sum(1 for _, r in rows if "error" in r)
        for key, field_ in (("by_modality", "modality"), ("by_kind", "kind")):
            groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
            for e, r in rows:
                groups[str(e[field_]) if e[field_] is not None else "(none)"].append(r)
            if key == "by_kind" and set(groups) == {"(none)"}:
                continue
            row[key] = {g: _means(rs) for g, rs in sorted(groups.items())}
    return {
        "k": k,
        "collection": collection,
        "runs": run_rows,
        "queries": per_query,
        "excluded": excluded,
        "warnings": warnings,
        "counts": {"queries": len(queries), "evaluated": len(scored), "qrels": len(qrels)},
        "run_specs": [asdict(r) for r in runs],
        "items": items,
    }


# ------------------------------------------------------------------------------------------------ answers
_CITE = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


def evaluate_answers(
    queries: Sequence[Query],
    qrels: Sequence[Qrel],
    url: str,
    *,
    collection: str | None = None,
    k: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[str], None] | None = None,
    ask: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Ask every query with a relevant qrel to ``POST {url}/v1/answer`` (not streamed) and score the answers.

    * cited precision: of the citations the answer cites (``cited: true``), the fraction relevant per the qrels
      (per answer, averaged over the answers that cite anything);
    * ``answers_citing_relevant``: the fraction of answers citing at least one relevant source;
    * token F1 (SQuAD normalisation) against the query's reference ``answer``, where it has one; the answer's
      citation markers (``[2]``) are removed first.
    """
    if ask is None:
        from mmrag.client import ask as client_ask

        ask = client_ask
    say = progress or (lambda _msg: None)
    by_query: dict[str, list[Qrel]] = defaultdict(list)
    for q in qrels:
        by_query[q.query_id].append(q)
    judge = Judge(by_query)
    rows: list[dict[str, Any]] = []
    for n, q in enumerate(queries, 1):
        if not any(r.relevance > 0 for r in by_query.get(q.id, ())):
            continue
        row: dict[str, Any] = {"id": q.id, "query": q.query, "kind": q.kind}
        try:
            out = ask(url, q.query, k=k, collection=collection, max_tokens=max_tokens, stream=False)
        except Exception as e:  # reported per query
            row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            continue
        cites = out.get("citations") or []
        cited = [c for c in cites if c.get("cited")]
        relevant = [c for c in cited if judge.relevant(q.id, {**c, "source_uri": c.get("source")})]
        row.update(
            {
                "answer": out.get("answer", ""),
                "cited": [c.get("n") for c in cited],
                "cited_relevant": [c.get("n") for c in relevant],
                "sources_relevant": sum(1 for c in cites if judge.relevant(q.id, {**c, "source_uri": c.get("source")})),
                "cited_precision": _round(len(relevant) / len(cited)) if cited else None,
                "token_f1": _round(M.token_f1(_CITE.sub(" ", out.get("answer", "")), q.answer))
                if q.answer is not None
                else None,
                "latency_ms": (out.get("timings") or {}).get("total"),
            }
        )
        rows.append(row)
        if n % 10 == 0:
            say(f"  answers: {n}/{len(queries)}")
    ok = [r for r in rows if "error" not in r]
    summary = {
        "n": len(rows),
        "errors": len(rows) - len(ok),
        "cited_precision": _round(M.mean(r["cited_precision"] for r in ok)),
        "answers_citing_anything": _round(M.mean(float(bool(r["cited"])) for r in ok)),
        "answers_citing_relevant": _round(M.mean(float(bool(r["cited_relevant"])) for r in ok)),
        "token_f1": _round(M.mean(r["token_f1"] for r in ok)),
        "with_reference": sum(1 for r in ok if r["token_f1"] is not None),
        "latency_ms": M.latency_summary([r["latency_ms"] for r in ok if r.get("latency_ms") is not None]),
    }
    return {"summary": summary, "queries": rows}
