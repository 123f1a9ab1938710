"""A million pages on one node: the visual cascade with its token tier memory-mapped on disk, stage sizes chosen for a
recall target, at 10k, 100k and 1M items in one table.

    nice python -m benchmarks.retrieval_1m [--sizes 10000,100000,1000000] [--queries 40]
        [--out benchmarks/results/retrieval_1m.json] [--workdir DIR] [--data DIR [--generate-only]]

The data is :class:`benchmarks.retrieval.SyntheticCorpus` (the same generator and queries as
``benchmarks/retrieval.py``), streamed to a real LanceDB table ten chunks (10k items) at a time, never all in RAM.
The full-precision tier (``multivector``, read for the exact stage's survivors) is stored as float16 to halve its
disk; the int8 copies the index loads are written beside it as ingestion writes them. Ground truth is the exhaustive
exact float32 MaxSim top-10 of every query, computed on the float32 tokens as each chunk is generated (all queries'
tokens against a block of item tokens at once).

The index (:class:`mmrag.store.search.SearchIndex`) is loaded from the table with ``token_tier: disk`` (int8 tokens
and scales in an unlinked memory-mapped file) and ``recall_target`` (``first_stage_k`` chosen at load by
:mod:`mmrag.store.calibrate`); at sizes up to 100k the all-in-RAM default is measured beside it. Index memory is the
process' resident anonymous memory grown by the load (``RssAnon``), reported apart from the mapped file's pages it
touched (``RssFile``: page cache the kernel can drop). Results: JSON and Markdown beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.retrieval import COLLECTION, K, SyntheticCorpus, _arrow_rows, _calibrate, _pct, _recall
from mmrag.store import schema as S
from mmrag.store.search import SearchFilters, SearchIndex

#: generator chunks (1000 items each) written to LanceDB per append
CHUNKS_PER_WRITE = 10


def _status_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def _du_mb(path: Path) -> float:
    got = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(got.stdout.split()[0]) / 1024


def _f16_rows(first: int, toks: np.ndarray, n_t: np.ndarray, dim: int) -> pa.Table:
    """The store's rows (with int8 copies) for one chunk, the multivector column as float16."""
    tbl = _arrow_rows(first, toks, n_t, dim)
    i = tbl.schema.get_field_index("multivector")
    f16 = pa.list_(pa.list_(pa.float16(), dim))
    return tbl.set_column(i, pa.field("multivector", f16), tbl.column(i).cast(f16))


def _timed(index: SearchIndex, queries: list[np.ndarray], repeats: int = 2, **kw: Any) -> tuple[list, list]:
    filters = SearchFilters(collection=COLLECTION)
    for q in queries[:3]:  # warm-up: torch, allocator
        index.search_visual(q, K, filters=filters, **kw)
    lat, results = [], []
    for rep in range(repeats):
        for q in queries:
            t0 = time.perf_counter()
            hits = index.search_visual(q, K, filters=filters, **kw)
            lat.append(time.perf_counter() - t0)
            if rep == 0:
                results.append([h.id for h in hits])
    return lat, results


def _stages(index: SearchIndex, queries: list[np.ndarray]) -> dict[str, float]:
    """Median milliseconds of the cascade's in-RAM stages at the index's own first_stage_k: the pooled mat-vec, the
    top-k of it, the token MaxSim of the candidates; and of a whole search (which adds the filters' mask, the exact
    stage's LanceDB take and its MaxSim)."""
    snap, scorer = index._snap, index._scorer
    filters = SearchFilters(collection=COLLECTION)
    c1 = snap.first_stage_k or index.config.first_stage_k
    times: dict[str, list[float]] = {"pooled": [], "top_k": [], "tokens": [], "search": []}
    for q in queries:
        allowed = np.flatnonzero(snap.mask(filters) & (snap.tok_len > 0))
        t0 = time.perf_counter()
        s1 = scorer.pooled_scores(snap, q.mean(axis=0), allowed)
        t1 = time.perf_counter()
        cand = allowed[scorer.top_idx(s1, c1)]
        t2 = time.perf_counter()
        scorer.token_maxsim(snap, q, cand)
        t3 = time.perf_counter()
        index.search_visual(q, K, filters=filters)
        t4 = time.perf_counter()
        for name, dt_ in (("pooled", t1 - t0), ("top_k", t2 - t1), ("tokens", t3 - t2), ("search", t4 - t3)):
            times[name].append(dt_)
    return {name: round(float(np.median(v)) * 1000, 2) for name, v in times.items()}


def _summary(lat: list[float], res: list[list[str]], truth: list[list[str]], **extra: Any) -> dict[str, Any]:
    rec = [_recall(r, t) for r, t in zip(res, truth, strict=False)]
    return {
        "queries": len(res),
        "latency_samples": len(lat),
        "p50_ms": round(_pct(lat, 50), 2),
        "p99_ms": round(_pct(lat, 99), 2),
        "recall_at_10": round(float(np.mean(rec)), 4),
        "min_recall_at_10": round(float(np.min(rec)), 2),
        **extra,
    }


def _generate(corpus: SyntheticCorpus, queries: list[np.ndarray], db_dir: Path, log: Any) -> dict[str, Any]:
    """Stream the corpus into LanceDB; the exact top-10 of every query, computed chunk by chunk."""
    import lancedb
    import torch

    n = corpus.n
    schema = _f16_rows(0, *corpus.make_chunk(0)[:2], corpus.dim).schema
    tbl = lancedb.connect(str(db_dir)).create_table(S.ITEMS, schema=schema)
    q_all = torch.from_numpy(np.concatenate(queries))
    q_seg = np.cumsum([0] + [len(q) for q in queries[:-1]])
    exact = np.empty((len(queries), n), np.float32)
    t_gen = t_write = t_gt = 0.0
    total = 0
    pending: list[pa.Table] = []
    for c in range(corpus.n_chunks):
        t0 = time.perf_counter()
        toks, n_t, _ = corpus.make_chunk(c)
        first = c * corpus.chunk
        pending.append(_f16_rows(first, toks, n_t, corpus.dim))
        t1 = time.perf_counter()
        if len(pending) == CHUNKS_PER_WRITE or c == corpus.n_chunks - 1:
            tbl.add(pa.concat_tables(pending))
            pending = []
        t2 = time.perf_counter()
        offs = np.concatenate([[0], np.cumsum(n_t)])
        total += int(offs[-1])
        step = max(1, int(25_000_000 // max(1, len(q_all)) // 120))  # sims blocks of ~100 MB
        for s in range(0, len(n_t), step):
            e = min(len(n_t), s + step)
            sims = (q_all @ torch.from_numpy(toks[offs[s] : offs[e]]).T).numpy()
            best = np.maximum.reduceat(sims, offs[s:e] - offs[s], axis=1)
            exact[:, first + s : first + e] = np.add.reduceat(best, q_seg, axis=0)
        t3 = time.perf_counter()
        t_gen, t_write, t_gt = t_gen + t1 - t0, t_write + t2 - t1, t_gt + t3 - t2
        if c % 100 == 99:
            log(f"[{n}] {first + len(n_t)} items: gen {t_gen:.0f}s write {t_write:.0f}s truth {t_gt:.0f}s")
    truth_idx = [np.argsort(-exact[j], kind="stable")[:K] for j in range(len(queries))]
    return {
        "truth": [[f"item{i:07d}" for i in t] for t in truth_idx],
        "tokens": total,
        "generate_s": round(t_gen, 1),
        "lancedb_write_s": round(t_write, 1),
        "ground_truth_s": round(t_gt, 1),
    }


def _index(db_dir: Path, cfg: dict[str, Any]) -> tuple[SearchIndex, dict[str, Any]]:
    import lancedb

    gc.collect()
    before = _status_mb()
    t0 = time.perf_counter()
    index = SearchIndex.from_db(lancedb.connect(str(db_dir)), cfg)
    build_s = time.perf_counter() - t0
    gc.collect()
    after = _status_mb()
    snap = index._snap
    mem = index.memory_bytes()
    return index, {
        "config": {k: v for k, v in cfg.items() if k != "token_dir"},
        "build_s": round(build_s, 1),
        "index_ram_mb": round(sum(mem.values()) / 2**20, 1),
        "index_ram_parts_mb": {k: round(v / 2**20, 1) for k, v in mem.items()},
        "token_file_mb": round(sum(snap.disk_nbytes().values()) / 2**20, 1),
        "rss_anon_growth_mb": round(after["RssAnon"] - before["RssAnon"], 1),
        "rss_file_after_load_mb": round(after["RssFile"], 1),
        "calibration": snap.loaded.get("calibration"),
        "first_stage_k": snap.first_stage_k or index.config.first_stage_k,
    }


def run_size(
    n: int,
    *,
    n_queries: int,
    seed: int,
    workdir: Path,
    log: Any,
    data_dir: Path | None = None,
    generate_only: bool = False,
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # generation and ground truth use every core
    out: dict[str, Any] = {"items": n, "contention_probe_ms_before": _calibrate()}
    corpus = SyntheticCorpus(n, seed=seed)
    out["generator"] = corpus.params()
    queries, _ = corpus.make_queries(n_queries)
    kept_dir = data_dir / f"lance-{n}-seed{seed}-q{n_queries}" if data_dir is not None else None
    db_dir = kept_dir or workdir / f"lance-{n}"
    done = db_dir / "truth.json"
    if kept_dir is not None and done.exists():  # generated by an earlier run with the same size, seed and queries
        data = json.loads(done.read_text())
        log(f"[{n}] reusing the table and ground truth in {db_dir}")
    else:
        shutil.rmtree(db_dir, ignore_errors=True)  # a half-written table of an interrupted run
        t0 = time.perf_counter()
        data = _generate(corpus, queries, db_dir, log)
        data["wall_s"] = round(time.perf_counter() - t0, 1)
        data["table_disk_mb"] = round(_du_mb(db_dir), 1)
        if kept_dir is not None:
            done.write_text(json.dumps(data))
    truth = data.pop("truth")
    out["data"] = data
    log(f"[{n}] data: {out['data']}")
    if generate_only:
        return out

    torch.set_num_threads(1)  # as in a Ray Serve replica (see benchmarks/retrieval.py)
    variants: dict[str, dict[str, Any]] = {
        "disk_tier_recall_target": {
            "token_tier": "disk", "token_dir": str(workdir / "tokens"), "recall_target": 0.95,
        },
    }  # fmt: skip
    if n <= 100_000:
        variants["ram_default"] = {}
    out["runs"] = {}
    for name, cfg in variants.items():
        index, info = _index(db_dir, cfg)
        log(f"[{n}] {name} loaded: {info}")
        lat, res = _timed(index, queries)
        info["search"] = _summary(lat, res, truth)
        info["rss_file_after_search_mb"] = round(_status_mb()["RssFile"], 1)
        log(f"[{n}] {name}: {info['search']}")
        info["stage_ms"] = _stages(index, queries)
        log(f"[{n}] {name} stages: {info['stage_ms']}")
        if name.startswith("disk"):
            sweep = []
            for c1 in (1500, 3000, 6000, 12000, 24000):
                if c1 >= n:
                    break
                lat, res = _timed(index, queries, repeats=1, first_stage_k=c1)
                sweep.append(_summary(lat, res, truth, first_stage_k=c1))
                log(f"[{n}] sweep {sweep[-1]}")
            info["sweep"] = sweep
        out["runs"][name] = info
        index.close()
        del index
        gc.collect()
    out["contention_probe_ms_after"] = _calibrate()
    if kept_dir is None:
        shutil.rmtree(db_dir, ignore_errors=True)
    return out


def write_markdown(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    lines = [
        "# A million pages on one node",
        "",
        f"`{result['command']}` on {result['date']}: {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
        f"torch {m['torch']}, lancedb {m['lancedb']}. Shared, loaded machine (run under `nice`): timings are upper "
        f"bounds. Total run time {result['total_s']:.0f} s.",
        "",
        "Data: `benchmarks/retrieval.py`'s SyntheticCorpus (dim 128, 60-120 tokens per item, clustered topics); "
        "queries of 15-25 noisy tokens from one item. Recall@10 against the exhaustive exact float32 MaxSim top-10. "
        "Index: int8 tokens + scales in a memory-mapped file (`token_tier: disk`), `first_stage_k` chosen at load "
        "for `recall_target: 0.95`; exact MaxSim on the survivors from the float16 `multivector` column in LanceDB. "
        "Index RAM = the snapshot's arrays in anonymous memory; RSS anon = the process' anonymous RSS grown by the "
        "load; mapped pages = file-backed RSS after the searches (page cache, droppable).",
        "",
        "| items | index | first_stage_k | p50 ms | p99 ms | recall@10 | index RAM MB | RSS anon growth MB "
        "| mapped pages MB | token file MB | table disk MB | load s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["sizes"]:
        for name, v in r["runs"].items():
            s = v["search"]
            lines.append(
                f"| {r['items']:,} | {name} | {v['first_stage_k']} | {s['p50_ms']} | {s['p99_ms']} | "
                f"{s['recall_at_10']} | {v['index_ram_mb']} | {v['rss_anon_growth_mb']} | "
                f"{v['rss_file_after_search_mb']} | {v['token_file_mb']} | {r['data']['table_disk_mb']} | "
                f"{v['build_s']} |"
            )
    lines += ["", "## Where a search's time goes (median ms at the chosen first_stage_k)", "",
              "| items | index | pooled mat-vec | top-k | token MaxSim | whole search |",
              "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["sizes"]:
        for name, v in r["runs"].items():
            st = v.get("stage_ms", {})
            lines.append(f"| {r['items']:,} | {name} | {st.get('pooled')} | {st.get('top_k')} | {st.get('tokens')} | "
                         f"{st.get('search')} |")  # fmt: skip
    lines += ["", "## Calibration (stage sizes chosen at load)", ""]
    for r in result["sizes"]:
        cal = r["runs"]["disk_tier_recall_target"].get("calibration")
        lines.append(f"- {r['items']:,} items: {cal}")
    lines += ["", "## First-stage sweep (disk tier)", "", "| items | first_stage_k | p50 ms | p99 ms | recall@10 |",
              "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["sizes"]:
        for s in r["runs"]["disk_tier_recall_target"].get("sweep", []):
            lines.append(f"| {r['items']:,} | {s['first_stage_k']} | {s['p50_ms']} | {s['p99_ms']} | "
                         f"{s['recall_at_10']} |")  # fmt: skip
    lines += ["", "## Data and timings", ""]
    for r in result["sizes"]:
        lines.append(f"- {r['items']:,} items: {r['data']}; contention probe "
                     f"{r['contention_probe_ms_before']} / {r['contention_probe_ms_after']} ms")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated corpus sizes")
    ap.add_argument("--out", default="benchmarks/results/retrieval_1m.json", help="JSON result (.md beside it)")
    ap.add_argument("--queries", type=int, default=40, help="queries per size (ground truth is exhaustive)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the LanceDB tables and token files go (local disk)")
    ap.add_argument(
        "--data",
        default=None,
        help="keep each size's table and ground truth here and reuse them on a later run with the same size, seed and "
        "queries (a 1M table is ~34 GB and takes ~15 min to make)",
    )
    ap.add_argument("--generate-only", action="store_true", help="make (or check) the data, measure nothing")
    args = ap.parse_args(argv)
    import lancedb
    import torch

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s {msg}", file=sys.stderr, flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": "nice python -m benchmarks.retrieval_1m " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "lancedb": lancedb.__version__,
        },
        "sizes": [],
    }
    work = Path(tempfile.mkdtemp(prefix="mmrag-1m-", dir=args.workdir))
    try:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            got = run_size(
                n,
                n_queries=args.queries,
                seed=args.seed,
                workdir=work,
                log=log,
                data_dir=Path(args.data) if args.data else None,
                generate_only=args.generate_only,
            )
            if args.generate_only:
                continue
            result["sizes"].append(got)
            result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            result["total_s"] = round(time.perf_counter() - started, 1)
            out.write_text(json.dumps(result, indent=2) + "\n")  # after every size: a long run keeps what it has
            write_markdown(result, out.with_suffix(".md"))
            log(f"wrote {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
