"""Sanity checks for the retrieval evaluation set in benchmarks/data/.

    python benchmarks/data/check_eval_set.py [--set main|slice|all] [--quiet]

Hard checks (the script exits non-zero if one fails):
  * every corpus.json entry exists; PDFs open; videos decode (when decord is installed);
  * query ids are unique, every query has >= 1 qrel, every qrel names a known query;
  * every qrel source is in corpus.json, kinds/relevances are valid;
  * every PDF page is within the document's page count; every video span lies inside the video.

Soft checks (printed for a human to read, never fatal):
  * for each PDF qrel: which key words of the reference answer occur on that page (``hit k/n``);
  * any run of 4+ consecutive words shared verbatim between a question and one of its relevant pages
    (questions are meant to be paraphrased, so such overlaps should be rare and limited to names/code).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KINDS = {"text", "table", "figure", "equation", "video"}
STOP = set(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "that",
        "this",
        "than",
        "then",
        "was",
        "were",
        "which",
        "what",
        "when",
        "where",
        "how",
        "does",
        "do",
        "can",
        "use",
        "used",
        "using",
        "only",
        "also",
        "about",
        "after",
        "before",
        "each",
        "per",
        "via",
        "e",
        "g",
        "i",
        "one",
        "two",
        "both",
        "all",
        "any",
        "not",
        "no",
        "yes",
        "there",
        "their",
        "they",
        "them",
        "his",
        "her",
        "he",
        "she",
        "over",
        "under",
        "up",
        "down",
        "about",
        "around",
        "about,",
    ]
)


def norm_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"-\n", "", text)  # words hyphenated across lines
    return re.findall(r"[a-z0-9_]+", text)


def load_jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def shared_runs(q: list[str], page: list[str], n: int = 4) -> list[str]:
    """Maximal runs of >= n consecutive question words that also occur (as n-grams) in the page."""
    grams = ngrams(page, n)
    hits = [i for i in range(len(q) - n + 1) if tuple(q[i : i + n]) in grams]
    runs, start, prev = [], None, None
    for i in hits:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            runs.append(" ".join(q[start : prev + n]))
            start = prev = i
    if start is not None:
        runs.append(" ".join(q[start : prev + n]))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=["main", "slice", "all"], default="all")
    ap.add_argument("--quiet", action="store_true", help="print only problems and the summary")
    args = ap.parse_args()

    import fitz  # PyMuPDF

    errors: list[str] = []
    corpus = json.loads((HERE / "corpus.json").read_text())
    by_source = {}
    for e in corpus:
        p = ROOT / e["path"]
        if not p.is_file():
            errors.append(f"corpus: missing file {e['path']}")
            continue
        by_source[e["source"]] = p

    pages: dict[str, list[list[str]]] = {}
    durations: dict[str, float] = {}
    for src, p in by_source.items():
        if p.suffix.lower() == ".pdf":
            with fitz.open(p) as doc:
                pages[src] = [norm_tokens(pg.get_text()) for pg in doc]
        else:
            try:
                import decord

                vr = decord.VideoReader(str(p))
                durations[src] = len(vr) / vr.get_avg_fps()
            except ImportError:
                pass

    sets = {"main": HERE, "slice": HERE / "slice"}
    chosen = ["main", "slice"] if args.set == "all" else [args.set]
    n_overlap = n_weak = 0
    for name in chosen:
        d = sets[name]
        queries = load_jsonl(d / "queries.jsonl")
        qrels = load_jsonl(d / "qrels.jsonl")
        print(f"== {name}: {len(queries)} queries, {len(qrels)} qrels")
        ids = [q["id"] for q in queries]
        if len(ids) != len(set(ids)):
            errors.append(f"{name}: duplicate query ids")
        qmap = {q["id"]: q for q in queries}
        rel_by_q: dict[str, list[dict]] = {}
        for r in qrels:
            if r["query_id"] not in qmap:
                errors.append(f"{name}: qrel for unknown query {r['query_id']}")
                continue
            rel_by_q.setdefault(r["query_id"], []).append(r)
        for q in queries:
            qid = q["id"]
            if q.get("kind") not in KINDS:
                errors.append(f"{name} {qid}: bad kind {q.get('kind')!r}")
            for key in ("query", "answer"):
                if not q.get(key, "").strip():
                    errors.append(f"{name} {qid}: empty {key}")
            rels = rel_by_q.get(qid, [])
            if not rels:
                errors.append(f"{name} {qid}: no qrels")
            qtok = norm_tokens(q["query"])
            akeys = sorted({t for t in norm_tokens(q["answer"]) if t not in STOP and (len(t) >= 3 or t.isdigit())})
            for r in rels:
                src = r["source"]
                if src not in by_source:
                    errors.append(f"{name} {qid}: source {src} not in corpus.json")
                    continue
                if r.get("relevance") not in (1, 2):
                    errors.append(f"{name} {qid}: relevance must be 1 or 2")
                if "page" in r:
                    if (q["kind"] == "video") or src not in pages:
                        errors.append(f"{name} {qid}: page qrel on non-PDF {src}")
                        continue
                    npages = len(pages[src])
                    if not (1 <= r["page"] <= npages):
                        errors.append(f"{name} {qid}: page {r['page']} outside 1..{npages} of {src}")
                        continue
                    ptok = pages[src][r["page"] - 1]
                    pset = set(ptok)
                    hit = [k for k in akeys if k in pset]
                    miss = [k for k in akeys if k not in pset]
                    frac = len(hit) / max(1, len(akeys))
                    weak = frac < 0.5 and r["relevance"] == 2
                    n_weak += weak
                    runs = shared_runs(qtok, ptok)
                    n_overlap += bool(runs)
                    if not args.quiet or weak or runs:
                        flag = " WEAK" if weak else ""
                        print(
                            f"  {qid} {src} p{r['page']} rel{r['relevance']} hit {len(hit)}/{len(akeys)}{flag}"
                            f" miss={miss[:8]}"
                        )
                        for run in runs:
                            print(f"      OVERLAP: '{run}'")
                else:
                    s, e = r.get("start_s"), r.get("end_s")
                    if s is None or e is None or not (0 <= s < e):
                        errors.append(f"{name} {qid}: bad video span {s}..{e}")
                        continue
                    dur = durations.get(src)
                    if dur is not None and e > dur + 0.05:
                        errors.append(f"{name} {qid}: span end {e} beyond {src} length {dur:.2f}s")
                    if not args.quiet:
                        print(
                            f"  {qid} {src} {s:.1f}-{e:.1f}s rel{r['relevance']}"
                            + (f" (video {dur:.1f}s)" if dur else "")
                        )
        kinds: dict[str, int] = {}
        for q in queries:
            kinds[q["kind"]] = kinds.get(q["kind"], 0) + 1
        srcs: dict[str, int] = {}
        for q in queries:
            s = rel_by_q.get(q["id"], [{}])[0].get("source", "?")
            srcs[s] = srcs.get(s, 0) + 1
        print(f"  kinds: {dict(sorted(kinds.items()))}")
        print(f"  sources: {dict(sorted(srcs.items()))}")

    print(
        f"\nsoft: {n_weak} weak keyword matches (rel 2, < 50% of answer words on page), "
        f"{n_overlap} qrels with a shared 4-word run"
    )
    if errors:
        print("\nERRORS:")
        for e in errors:
            print("  " + e)
        return 1
    print("hard checks: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
