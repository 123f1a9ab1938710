"""Refresh benchmark: the search index's incremental refresh vs a full reload, and a new replica's first load.

    python -m benchmarks.refresh [--items 100000] [--changed 100] [--out benchmarks/results/refresh.json]

Writes a synthetic ColPali-like collection (:class:`benchmarks.retrieval.SyntheticCorpus`, ~90 tokens x 128 dims
per item) to a real LanceDB items table with the store's scalar indexes, then measures:

``first_load``   :meth:`SearchIndex.from_db` in a fresh process: seconds, peak and final RSS (also with the code of
                 ``--baseline-src``, e.g. the previous commit's ``services/``, when given);
``append``       ``--changed`` items published the way ingestion does it (rows appended invisible, then one update
                 of ``visible`` per document and the delete of older versions: several table versions), then one
                 refresh, incremental vs full reload (the previous behaviour: every visible row's metadata and
                 pooled vector re-read, tokens copied for known ids) of the same version;
``delete``       ``--changed`` items' documents deleted, the same two ways;
``compaction``   the table compacted (:meth:`LanceStore.optimize`: every row moves), then an incremental refresh.

Each incremental snapshot is checked against the full reload (same ids, same visual hits). Results: JSON and a
Markdown summary beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.retrieval import COLLECTION, SyntheticCorpus, _arrow_rows, _rss_mb
from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store.search import SearchFilters, SearchIndex
from mmrag.store.snapshot_load import load_snapshot

PER_DOC = 10  # items i..i+9 are the pages of document i // 10


def _uri(doc: int) -> str:
    return f"/bench/doc{doc:06d}.pdf"


def _first_load(db_dir: Path, src: str | None) -> dict[str, Any]:
    """SearchIndex.from_db in a fresh process (``src``: import mmrag from there instead)."""
    code = (
        "import json, resource, time, lancedb\n"
        "from benchmarks.retrieval import _rss_mb\n"
        "from mmrag.store.search import SearchIndex\n"
        "r0 = _rss_mb(); t0 = time.perf_counter()\n"
        f"ix = SearchIndex.from_db(lancedb.connect({str(db_dir)!r}))\n"
        "s = time.perf_counter() - t0\n"
        "print(json.dumps({'seconds': round(s, 2), 'items': len(ix), 'rss_before_mb': round(r0),"
        " 'rss_after_mb': round(_rss_mb()),"
        " 'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),"
        " 'index_mb': round(sum(ix.memory_bytes().values()) / 2**20, 1),"
        " 'tokens_from': (getattr(ix._snap, 'loaded', None) or {}).get('tokens_from')}))\n"
    )
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (src, root, env.get("PYTHONPATH")) if p])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rows(corpus: SyntheticCorpus, first: int, n: int, *, content_hash: str = "h", doc0: int | None = None) -> Any:
    """Items ``first .. first+n`` (within one generator chunk) as store rows; ``doc0``: put them in documents
    ``doc0, doc0+1, ...`` instead of their own (a new version of those documents)."""
    c = first // corpus.chunk
    toks, n_t, _ = corpus.make_chunk(c)
    lo, hi = first - c * corpus.chunk, first - c * corpus.chunk + n
    offs = np.concatenate([[0], np.cumsum(n_t)])
    rows = _arrow_rows(first, toks[offs[lo] : offs[hi]], n_t[lo:hi], corpus.dim)
    d = (first if doc0 is None else doc0 * PER_DOC) // PER_DOC + np.arange(n) // PER_DOC
    uris = [_uri(i) for i in d]
    cols = {
        "content_hash": pa.array([content_hash] * n),
        "doc_id": pa.array([S.doc_id(COLLECTION, u) for u in uris]),  # as ingestion names documents
        "source_uri": pa.array(uris),
    }
    for name, arr in cols.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, arr)
    return rows


def _compare(index: SearchIndex, full: Any, queries: list[np.ndarray]) -> bool:
    """Same ids and the same visual hits on the incremental snapshot as on the full reload."""
    if index._snap.ids != full.ids:
        return False
    other = SearchIndex(index.config)
    other._snap = full
    f = SearchFilters(collection=COLLECTION)
    return all(
        [(h.id, round(h.score, 4)) for h in index.search_visual(q, 10, filters=f)]
        == [(h.id, round(h.score, 4)) for h in other.search_visual(q, 10, filters=f)]
        for q in queries
    )


def _measure(index: SearchIndex, store: LanceStore, queries: list[np.ndarray]) -> dict[str, Any]:
    """One incremental refresh, then a full reload of the same version (from the previous snapshot, as before)."""
    old = index._snap
    r0 = _rss_mb()
    t0 = time.perf_counter()
    index.refresh()
    inc_s = time.perf_counter() - t0
    inc_mb = _rss_mb() - r0  # the new snapshot beside the old one, before the old one is dropped
    snap = index._snap
    pinned = store._db.open_table(S.ITEMS)
    pinned.checkout(snap.version)
    t0 = time.perf_counter()
    full = load_snapshot(pinned, snap.version, old, index.config, incremental=False)
    full_s = time.perf_counter() - t0
    return {
        "incremental_s": round(inc_s, 3),
        "full_reload_s": round(full_s, 3),
        "speedup": round(full_s / inc_s, 1) if inc_s else None,
        "loaded": snap.loaded,
        "items": snap.n,
        "rss_growth_incremental_mb": round(inc_mb),
        "rss_growth_after_full_reload_mb": round(_rss_mb() - r0),
        "equal_to_full_reload": _compare(index, full, queries),
    }


def run(n: int, changed: int, seed: int, workdir: Path, baseline_src: str | None, log: Any) -> dict[str, Any]:
    import lancedb

    out: dict[str, Any] = {"items": n, "changed": changed}
    corpus = SyntheticCorpus(n + 2 * changed, seed=seed)  # the last 2 * changed items are written later
    db_dir = workdir / "lance"
    store = LanceStore(str(db_dir))
    store.ensure_tables(corpus.dim)
    tbl = store.table(S.ITEMS)
    t0 = time.perf_counter()
    for first in range(0, n, corpus.chunk):
        tbl.add(_rows(corpus, first, min(corpus.chunk, n - first)))
    store.refresh_scalar_indexes()
    out["write_s"] = round(time.perf_counter() - t0, 1)
    log(f"wrote {n} items in {out['write_s']}s")

    out["first_load"] = _first_load(db_dir, None)
    log(f"first load: {out['first_load']}")
    if baseline_src:
        out["first_load_baseline"] = _first_load(db_dir, baseline_src)
        log(f"first load (baseline {baseline_src}): {out['first_load_baseline']}")

    queries, _ = corpus.make_queries(10)
    index = SearchIndex.from_db(lancedb.connect(str(db_dir)))
    v0 = index.version

    # append: as ingestion publishes documents (add invisible, update visible, delete older versions)
    store.add_items(_rows(corpus, n, changed))
    docs = sorted({_uri(i // PER_DOC) for i in range(n, n + changed)})
    store.finish_documents([FinishedDocument(COLLECTION, u, "h", "pdf", PER_DOC, 0, "synthetic") for u in docs])
    out["append"] = _measure(index, store, queries)
    out["append"]["table_versions"] = index.version - v0
    log(f"append {changed}: {out['append']}")

    # delete: the documents of `changed` items of the original collection
    v0 = index.version
    for d in range(changed // PER_DOC):
        store.delete_document(COLLECTION, _uri(d))
    out["delete"] = _measure(index, store, queries)
    out["delete"]["table_versions"] = index.version - v0
    log(f"delete {changed}: {out['delete']}")

    # a replacement: new content (new item ids) for the documents of `changed` existing items
    doc0 = changed // PER_DOC  # documents 0 .. doc0-1 were deleted above
    store.add_items(_rows(corpus, n + changed, changed, content_hash="h2", doc0=doc0))
    docs = [_uri(d) for d in range(doc0, 2 * doc0)]
    store.finish_documents([FinishedDocument(COLLECTION, u, "h2", "pdf", PER_DOC, 0, "synthetic") for u in docs])
    out["append_more"] = _measure(index, store, queries)
    log(f"append {changed} more: {out['append_more']}")

    t0 = time.perf_counter()
    store.optimize(keep_versions_s=3600)
    out["optimize_s"] = round(time.perf_counter() - t0, 1)
    out["compaction"] = _measure(index, store, queries)
    log(f"after compaction: {out['compaction']}")
    out["index_mb"] = round(sum(index.memory_bytes().values()) / 2**20, 1)
    return out


def write_markdown(result: dict[str, Any], path: Path) -> None:
    r, m = result["run"], result["machine"]
    lines = [
        "# Search index refresh: incremental vs full reload",
        "",
        f"`{result['command']}` on {result['date']}: {m['cpu_count']} CPUs, Python {m['python']}, "
        f"numpy {m['numpy']}, lancedb {m['lancedb']}. Shared, loaded machine: timings are upper bounds. "
        f"Total run time {result['total_s']} s.",
        "",
        f"{r['items']:,} synthetic ColPali-like items (~90 tokens x 128 dims each, int8 token store), written in "
        f"{r['write_s']} s with the store's scalar indexes. Each step changes {r['changed']} items and is followed by "
        "one refresh; the full reload is the previous behaviour (every visible row's metadata, pooled vector and ids "
        "re-read, tokens copied for known ids) on the same table version.",
        "",
        "| step | incremental s | full reload s | speed-up | equal to full | RSS growth MB (incremental) | refresh |",
        "|---|---:|---:|---:|:---:|---:|---|",
    ]
    for key, name in (("append", "append + publish"), ("delete", "delete"), ("append_more", "replace documents"),
                      ("compaction", "after compaction (all rows moved)")):  # fmt: skip
        s = r[key]
        lines.append(
            f"| {name} | {s['incremental_s']} | {s['full_reload_s']} | {s['speedup']}x | "
            f"{'yes' if s['equal_to_full_reload'] else 'NO'} | {s['rss_growth_incremental_mb']} | "
            f"{s['loaded']['mode']}: +{s['loaded'].get('added', '?')} -{s['loaded'].get('removed', '?')} of "
            f"{s['loaded']['rows']:,} |"
        )
    lines += ["", "## First load of a new replica", "",
              "| code | seconds | peak RSS MB | RSS after MB | index MB | tokens read from |",
              "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    before = f"before ({result.get('baseline') or 'baseline'})"
    for key, name in (("first_load_baseline", before), ("first_load", "this commit")):
        if key in r:
            f = r[key]
            src = f.get("tokens_from") or {"multivectors": "all"}
            how = ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in src.items())
            lines.append(
                f"| {name} | {f['seconds']} | {f['peak_rss_mb']} | {f['rss_after_mb']} | {f['index_mb']} | {how} |"
            )
    lines += [
        "",
        "The int8 token stage scores ~1500 candidates per query, so every item's tokens are in RAM (fetching "
        "candidates' multivectors per query costs 0.2-0.5 ms a row, benchmarks/results/retrieval.md). Items are "
        "written with an int8 copy of their tokens, quantised as the index holds them (`tokens_i8` + `token_scales`, "
        "dim + 4 bytes a token, mmrag.store.tokens), so a new replica reads those instead of every float32 "
        "multivector (4 x dim bytes a token, ~4.4 GB at 100k items) and quantises nothing; rows written before the "
        "copies existed are read from their multivectors until `mmrag store optimize` gives them copies. The exact "
        "stage reads its ~20 rows' multivectors by row id per query. 'Before' is the code of `--baseline-src` on the "
        "same table (it reads the multivectors). Peak RSS includes LanceDB's read buffers.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=100, help="items added / deleted per step (a multiple of 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-src", default=None, help="a folder holding another version's mmrag package")
    ap.add_argument("--baseline-label", default=None, help="what --baseline-src holds (for the summary)")
    ap.add_argument("--out", default="benchmarks/results/refresh.json", help="JSON result path (.md beside it)")
    ap.add_argument("--workdir", default=None, help="where the temporary LanceDB table goes")
    args = ap.parse_args(argv)
    import lancedb

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="mmrag-refresh-", dir=args.workdir))
    try:
        res = run(args.items, args.changed, args.seed, work, args.baseline_src, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "python -m benchmarks.refresh " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "lancedb": lancedb.__version__,
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "total_s": round(time.perf_counter() - started, 1),
        "run": res,
        "baseline": args.baseline_label,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
