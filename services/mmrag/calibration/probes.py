"""Probe queries drawn from a collection's own items: the ground truth calibration measures channels on.

Method (``keywords-v3``: v2 drawn in content order), deterministic for a seed and the same for the same files:

1. Sample items round-robin over the collection's documents (so one long manual does not fill the set), keeping
   those with at least ``MIN_WORDS`` words of text; in a small collection an item gives up to five probes.
2. In each, pick a random window of ``WINDOW`` consecutive words. Its content words (letters first, 3+ characters,
   not a stop word) that **also occur in the item outside the window** and are **not rare in the collection**
   (in at least 3% of the sampled items) are the body vocabulary: the query then describes the item, and no rare
   string of it gives the item away.
3. The query is 2 words of the item's context (its document's title and section headings, as a user names the
   manual and the topic they ask about) and 2-3 body words, shuffled. The item is the one relevant answer.

Why not a sentence of the item as the query: a channel that matches strings (BM25 on an exact sentence, or a dense
model on near-identical text) would find its own source trivially and win the calibration for that reason alone.
Sampling a few words, breaking their order, keeping only words the item repeats and the collection shares leaves a
query that must be matched by what the item is about, as a user's question is.

How it was chosen (measured on ``benchmarks/data``, real questions about 8 real PDFs, 508 pages): a dozen variants
(body words only, with or without rare words, with words from other pages of the document, with question
templates, with sentence spans, with context words, rarity floors of 1, 3 and 6%) were compared by the weights they
led calibration to choose and what those weights scored on the real questions. Body words alone made BM25 look far
better than it is on real questions (probe nDCG@10 0.93 against 0.66 for the dense channel, where on the real
questions the dense channel beat BM25), and calibration then turned the dense channel off. This method's choices
scored 0.705-0.716 nDCG@5 over three seeds, against 0.643 for BM25 alone and 0.753 for the best fixed weights. It was
selected on that set, so that set is not an independent test of it; probes still favour BM25 more than real
questions do (they are keywords, real questions are sentences).

Items without text (images without OCR text, silent clips) cannot give probes; a collection with fewer than
``calibration.min_probes`` usable probes stays uncalibrated (defaults apply).
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

METHOD = "keywords-v3"
MIN_WORDS = 40
WINDOW = 40
MIN_TERMS, MAX_TERMS = 3, 6
#: A body word in fewer than this share of the sampled items is rare: it would give its item away to BM25.
RARE_SHARE = 0.03

_WORD = re.compile(r"[^\W\d_][\w\-]*", re.UNICODE)
_STOP = """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how if in into is it its itself just may me might more most must my
    myself no nor not now of off on once only or other ought our ours ourselves out over own same shall she should
    so some such than that the their theirs them themselves then there these they this those through to too under
    until up upon us very was we were what when where which while who whom why will with would you your yours
    yourself yourselves one two use used using see also e.g i.e etc per via may can cannot within without
    following follows given gives example examples section chapter page figure table"""
STOPWORDS = frozenset(_STOP.split())


@dataclass(frozen=True)
class Probe:
    """A pseudo-query and the item it was drawn from."""

    query: str
    item_id: str
    doc_id: str


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning: start with a letter, 3+ characters, not stop words."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if len(w) >= 3 and w not in STOPWORDS]


def probe_from_text(
    text: str, rng: random.Random, *, context: str | None = None, common: Callable[[str], bool] | None = None
) -> str | None:
    """One query from one item's text and context (see the module docstring), or None if the text is too thin.

    ``common(word)`` says whether a word is common enough in the collection to be used (default: every word)."""
    words = text.split()
    if len(words) < MIN_WORDS:
        return None
    start = rng.randrange(0, len(words) - WINDOW + 1)
    window = words[start : start + WINDOW]
    rest = words[:start] + words[start + WINDOW :]
    elsewhere = set(content_words(" ".join(rest)))
    vocab = sorted({w for w in content_words(" ".join(window)) if w in elsewhere})
    if common is not None:
        shared = [w for w in vocab if common(w)]
        vocab = shared if len(shared) >= 2 else vocab
    ctx = sorted(set(content_words(context or "")))
    if ctx and len(vocab) >= 2:
        terms = rng.sample(ctx, min(len(ctx), 2))
        terms += [w for w in rng.sample(vocab, min(len(vocab), rng.randint(2, 3))) if w not in terms]
    else:
        if len(vocab) < MIN_TERMS:
            return None
        terms = rng.sample(vocab, min(len(vocab), rng.randint(MIN_TERMS, MAX_TERMS)))
    if len(terms) < MIN_TERMS:
        return None
    rng.shuffle(terms)
    return " ".join(terms)


def content_order(item: dict[str, Any]) -> tuple[Any, ...]:
    """A sort key from what an item holds, not where its file was: the file's content hash, then the item's place in
    it (ids and doc ids hash the file's path, so ordering by them gave the same files ingested from another folder
    other probes, and another calibration)."""
    return (
        item.get("content_hash") or "",
        item.get("modality") or "",
        item.get("page") or 0,
        item.get("start_s") or 0.0,
        item.get("text") or "",
        item["id"],
    )


def sample_probes(items: list[dict[str, Any]], n: int, seed: int, per_item: int = 5) -> list[Probe]:
    """Up to ``n`` probes from ``items`` (dicts with ``id``, ``doc_id``, ``text``, ``context``, and for a stable order
    ``content_hash``, ``modality``, ``page``, ``start_s``), round-robin over documents and, within a document, over
    its items; a small collection gives an item up to ``per_item`` probes (other windows). The same files give the
    same probes wherever they were ingested from (:func:`content_order`)."""
    rng = random.Random(seed)
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in sorted(items, key=content_order):
        if len((it.get("text") or "").split()) >= MIN_WORDS:
            by_doc[it["doc_id"]].append(it)
    queues = []
    for doc in sorted(by_doc, key=lambda d: content_order(by_doc[d][0])):
        rows = by_doc[doc][:]
        rng.shuffle(rows)
        queues.append([(it, r) for r in range(per_item) for it in rows])  # every item once before any twice
    df: Counter[str] = Counter()
    for it in items:
        df.update(set(content_words(it.get("text") or "")))
    floor = max(3, RARE_SHARE * len(items))
    out: list[Probe] = []
    seen: set[tuple[str, str]] = set()
    while len(out) < n and any(queues):
        for q in queues:
            while q and len(out) < n:
                it, _ = q.pop(0)
                query = probe_from_text(it["text"], rng, context=it.get("context"), common=lambda w: df[w] >= floor)
                if query is not None and (it["id"], query) not in seen:
                    seen.add((it["id"], query))
                    out.append(Probe(query=query, item_id=it["id"], doc_id=it["doc_id"]))
                    break
    return out


__all__ = ["METHOD", "Probe", "content_order", "content_words", "probe_from_text", "sample_probes"]
