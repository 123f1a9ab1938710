"""The evaluation report: run metadata, the quality targets, Markdown, files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmrag.eval.runner import METRICS

__all__ = ["check_targets", "config_summary", "environment", "markdown", "write_report"]

_FLAT = re.compile(r"\[((?:\s*(?:-?[\d.eE+-]+|null|true|false|\"[^\"\\\\\n]*\"),?)+\s*)\]")
_TITLES = {"ndcg@5": "nDCG@5", "ndcg@10": "nDCG@10", "recall@5": "R@5", "recall@10": "R@10", "mrr@10": "MRR@10"}
#: Runs that use one channel alone (compared with the fused run by target 2).
SINGLE_CHANNELS = ("visual", "bm25", "dense")


def environment(argv: Sequence[str] | None = None, prog: str = "mmrag eval") -> dict[str, Any]:
    """Date, command line, machine and load average, for the report header."""
    args = list(sys.argv[1:] if argv is None else argv)
    load = None
    if hasattr(os, "getloadavg"):
        load = [round(x, 2) for x in os.getloadavg()]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": prog + (" " + shlex.join(args) if args else ""),
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), {platform.platform()}, "
        f"Python {platform.python_version()}",
        "load_average": load,
    }


def config_summary(cfg: Any, collection: str | None = None) -> dict[str, Any]:
    """The settings that decide retrieval quality: profile, model ids, and the retriever's, reranker's and (where
    the config has one) calibration's settings, without the deployment resources."""
    from mmrag.config import DeploymentConfig

    def settings(section: Any) -> dict[str, Any] | None:
        if section is None:
            return None
        skip = set(DeploymentConfig.model_fields) if isinstance(section, DeploymentConfig) else set()
        return {k: v for k, v in section.model_dump(mode="json").items() if k not in skip}

    models = cfg.models
    text = getattr(models, "text", None)
    return {
        "profile": cfg.profile,
        "store": cfg.store.uri,
        "collection": collection or cfg.store.default_collection,
        "retriever_model": models.retriever.model,
        "text_model": getattr(text, "model", None),
        "generator_model": models.generator.model,
        "tiny_models": models.uses_tiny(),
        "retriever": settings(cfg.retriever),
        "reranker": settings(cfg.reranker),
        "calibration": settings(getattr(cfg, "calibration", None)),
    }


def _run(report: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for r in report.get("runs", []):
        if r["name"] == name and r.get("available"):
            return r
    return None


def _m(run: Mapping[str, Any] | None, metric: str) -> float | None:
    return None if run is None else run["means"].get(metric)


def check_targets(report: Mapping[str, Any], metric: str = "ndcg@5") -> list[dict[str, Any]]:
    """The committed quality targets, each ``MET``, ``MISSED`` or ``N/A`` (a run it needs did not run):

    1. default >= bm25 + 0.05;
    2. fused >= the best single channel (visual, bm25, dense: those that ran) - 0.01;
    3. reranking never lowers it: fused+rerank >= fused.
    """

    def verdict(lhs: float | None, rhs: float | None) -> str:
        if lhs is None or rhs is None:
            return "N/A"
        return "MET" if lhs >= rhs - 1e-9 else "MISSED"

    out = []
    d, b = _m(_run(report, "default"), metric), _m(_run(report, "bm25"), metric)
    out.append(
        {
            "target": f"default {metric} >= bm25 {metric} + 0.05",
            "status": verdict(d, None if b is None else b + 0.05),
            "numbers": {"default": d, "bm25": b},
        }
    )
    f = _m(_run(report, "fused"), metric)
    singles = {n: _m(_run(report, n), metric) for n in SINGLE_CHANNELS if _run(report, n) is not None}
    best = max(singles.items(), key=lambda kv: kv[1] if kv[1] is not None else -1.0) if singles else None
    out.append(
        {
            "target": f"fused {metric} >= best single channel {metric} - 0.01",
            "status": verdict(f, None if best is None or best[1] is None else best[1] - 0.01),
            "numbers": {"fused": f, **singles, "best": best[0] if best else None},
        }
    )
    fr = _m(_run(report, "fused+rerank"), metric)
    out.append(
        {
            "target": f"fused+rerank {metric} >= fused {metric} (reranking never lowers it)",
            "status": verdict(fr, f),
            "numbers": {"fused+rerank": fr, "fused": f},
        }
    )
    return out


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return out


def markdown(report: Mapping[str, Any], title: str = "Retrieval quality") -> str:
    """A human summary: the means table, breakdowns, latency, targets, answers, excluded queries, warnings."""
    env = report.get("environment", {})
    lines = [f"# {title}", ""]
    for key in ("date", "command", "machine", "load_average", "load_average_end"):
        if env.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: `{env[key]}`")
    bench = report.get("benchmark")
    if bench:
        ing = bench.get("ingest")
        done = ing if isinstance(ing, str) else f"{ing.get('pages')} pages, {ing.get('clips')} clips ingested"
        lines.append(f"- corpus: {len(bench.get('corpus', []))} files ({done}); {bench.get('seconds')} s in all")
    cfg = report.get("config") or {}
    if cfg:
        lines.append(
            "- setup: "
            + ", ".join(
                f"{k} `{v}`"
                for k, v in cfg.items()
                if k in ("profile", "collection", "retriever_model", "text_model") and v is not None
            )
        )
        if cfg.get("reranker"):
            lines.append(f"- reranker: `{cfg['reranker'].get('kind')}`")
        if cfg.get("tiny_models"):
            lines.append("- tiny random-weight models in use: the visual channel's scores are noise")
    if report.get("url"):
        lines.append(f"- server: `{report['url']}`")
    c = report.get("counts", {})
    lines.append(
        f"- {c.get('evaluated')} of {c.get('queries')} queries evaluated ({c.get('qrels')} qrels), "
        f"k = {report.get('k')}; means over the evaluated queries"
    )
    lines.append("")
    header = ["run", "setting", *(_TITLES[m] for m in METRICS), "p50 ms", "p95 ms", "errors"]
    rows = []
    for r in report.get("runs", []):
        if not r.get("available"):
            rows.append([r["name"], r["setting"], *("n/a" for _ in METRICS), "–", "–", "unavailable"])
            continue
        lat = r["latency_ms"]
        ms = [None if x is None else f"{x:.1f}" for x in (lat["p50"], lat["p95"])]
        rows.append([r["name"], r["setting"], *(r["means"][m] for m in METRICS), *ms, r["errors"]])
    lines += _table(header, rows)

    if report.get("targets"):
        lines += ["", "## Targets", ""]
        for t in report["targets"]:
            nums = ", ".join(f"{k} {_fmt(v)}" for k, v in t["numbers"].items())
            lines.append(f"- **{t['status']}** {t['target']} ({nums})")

    cal = report.get("calibration")
    if cal:
        lines += ["", "## The collection's calibration (what `default` and `fused` used)", ""]
        if cal.get("weights"):
            w = ", ".join(f"{c} {v:g}" for c, v in sorted(cal["weights"].items()))
            lines.append(
                f"- {cal.get('probes')} probe queries ({cal.get('method')}) drawn from {cal.get('n_items')} items; "
                f"chosen: {cal.get('fusion')} fusion of {w} (probe nDCG@10 {cal.get('fused_ndcg@10')}, best single "
                f"channel {cal.get('best_single_ndcg@10')})"
            )
            crow = [
                [c, m.get("ndcg@10"), m.get("mrr@10"), m.get("chance_mrr@10"), "yes" if m.get("above_chance") else "no"]
                for c, m in sorted((cal.get("channels") or {}).items())
            ]
            lines += ["", *_table(["channel", "probe nDCG@10", "probe MRR@10", "chance MRR@10", "used"], crow)]
            rr = cal.get("reranker") or {}
            if rr.get("ndcg@10_by_weight"):
                by = ", ".join(f"{w}: {v}" for w, v in rr["ndcg@10_by_weight"].items())
                lines += [
                    "",
                    f"- reranker `{rr.get('kind')}`: probe nDCG@10 by weight {by}; chosen weight {rr['weight']}",
                ]
        else:
            lines.append(f"- {cal.get('status')}: {cal.get('detail')}")

    for key, label in (("by_modality", "modality"), ("by_kind", "kind")):
        groups = sorted({g for r in report.get("runs", []) for g in r.get(key, {})})
        if not groups:
            continue
        lines += ["", f"## nDCG@5 by {label} (queries)", ""]
        avail = [r for r in report["runs"] if r.get("available")]
        counts = {g: next((r[key][g]["n"] for r in avail if g in r.get(key, {})), 0) for g in groups}
        brows = [[r["name"], *(r.get(key, {}).get(g, {}).get("ndcg@5") for g in groups)] for r in avail]
        lines += _table(["run", *(f"{g} ({counts[g]})" for g in groups)], brows)

    ans = report.get("answers")
    if ans:
        s = ans["summary"]
        lines += ["", "## Answers", ""]
        lines += _table(
            ["answers", "errors", "cited precision", "citing any", "citing relevant", "token F1", "with ref", "p50 ms"],
            [
                [
                    s["n"],
                    s["errors"],
                    s["cited_precision"],
                    s["answers_citing_anything"],
                    s["answers_citing_relevant"],
                    s["token_f1"],
                    s["with_reference"],
                    None if s["latency_ms"]["p50"] is None else f"{s['latency_ms']['p50']:.0f}",
                ]
            ],
        )
    if report.get("excluded"):
        lines += ["", "## Left out of the means", ""]
        lines += [f"- `{e['id']}`: {e['reason']}" for e in report["excluded"]]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], json_path: str | Path, title: str = "Retrieval quality") -> Path:
    """Write ``json_path`` and the Markdown beside it (same name, ``.md``); returns the Markdown's path."""
    p = Path(json_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=str)
    # arrays of plain values (a hit, a load average) on one line each: a 100-query report stays readable and small
    text = _FLAT.sub(lambda m: json.dumps(json.loads(m.group(0))), text)
    p.write_text(text + "\n")
    md = p.with_suffix(".md")
    md.write_text(markdown(report, title))
    return md
