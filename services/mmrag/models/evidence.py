"""Evidence regions: which parts of a page (or of a clip's frames) matched a query, from late interaction.

A ColPali-family score is ``sum_i max_t <q_i, d_t>``: every query token picks its best document token. The page's
image patches are a known run of those document tokens, on a known grid, so each query token's best match (and the
patches within ``margin`` of it) can be put back on the page. :func:`patch_heat` does that; :func:`regions` turns the
heat on the grid into a few boxes in normalised page coordinates (threshold, connected parts, merged when they
overlap), each with its share of the page's heat and the query tokens that landed in it.

Where the tokens sit comes from the processor (:class:`TokenLayout`): for ColQwen2 / ColQwen2.5 the stored
multivector of an image is ``prefix`` prompt tokens, then one token per ``merge_size x merge_size`` block of
``patch_size`` pixels of the image as Qwen2-VL's ``smart_resize`` sized it (row-major), then ``suffix`` prompt
tokens; a clip's multivector is its frames' concatenated (all frames share one size). The grid is derived from the
stored width and height (:func:`patch_grid`), nothing is re-embedded.

Pure numpy; the processor is only read (attributes), never imported here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Query tokens whose similarity to a patch is within this much (cosine) of their best match also light it up:
#: neighbouring patches of one word are near-ties, and a single winning patch per token would draw dots, not regions.
MARGIN = 0.05
#: Patches with at least this share of the hottest patch's heat form regions.
THRESHOLD = 0.5
#: Regions returned per page or frame, best first.
MAX_REGIONS = 4
#: At most this share of a page's patches (the hottest) form regions: a box over half the page says nothing.
MAX_AREA = 0.15


@dataclass(frozen=True)
class TokenLayout:
    """Where an image's patch tokens sit in its multivector, and how the processor sizes images."""

    prefix: int
    """Prompt tokens before the image's patch tokens."""
    suffix: int
    """Prompt tokens after them."""
    patch_size: int
    """Pixels per patch side (14 for Qwen2-VL)."""
    merge_size: int
    """Patches merged per token side (2 for Qwen2-VL: one token per 28x28 pixels)."""
    min_pixels: int
    """The processor's smallest resized image, in pixels."""
    max_pixels: int
    """The processor's largest resized image, in pixels."""
    query_prefix: int = 0
    """Tokens the processor puts before a query's words."""
    query_suffix: int = 0
    """Query-augmentation tokens after them (colpali-engine appends 10)."""
    max_aspect_ratio: float = 150.0
    """Images beyond this aspect ratio were padded with white before the encoder (see ``clamp_aspect_ratio``)."""

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_processor(cls, processor: Any, *, query_suffix: int, max_aspect_ratio: float) -> TokenLayout | None:
        """The layout of a colpali-engine Qwen2-VL-family processor (ColQwen2, ColQwen2.5), or None for a processor
        whose image tokens are not one run on a grid (then no regions are drawn)."""
        ip = getattr(processor, "image_processor", None)
        tok = getattr(processor, "tokenizer", None)
        prompt = getattr(processor, "visual_prompt_prefix", None)
        image_token = getattr(processor, "image_token", None)
        if ip is None or tok is None or not prompt or not image_token or prompt.count(image_token) != 1:
            return None
        size = getattr(ip, "size", None) or {}
        min_px = size.get("shortest_edge") or getattr(ip, "min_pixels", None)
        max_px = size.get("longest_edge") or getattr(ip, "max_pixels", None)
        patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
        if not (min_px and max_px and patch and merge):
            return None
        before, after = prompt.split(image_token)
        qprefix = getattr(processor, "query_prefix", "") or ""
        return cls(
            prefix=len(tok(before)["input_ids"]),
            suffix=len(tok(after)["input_ids"]),
            patch_size=int(patch),
            merge_size=int(merge),
            min_pixels=int(min_px),
            max_pixels=int(max_px),
            query_prefix=len(tok(qprefix)["input_ids"]) if qprefix else 0,
            query_suffix=query_suffix,
            max_aspect_ratio=max_aspect_ratio,
        )


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule (transformers' ``smart_resize``): both sides multiples of ``factor``, the area within
    ``[min_pixels, max_pixels]``, the aspect ratio kept as well as rounding allows. Returns (height, width)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def padded_size(width: int, height: int, max_ratio: float) -> tuple[int, int]:
    """The size ``clamp_aspect_ratio`` padded an image to (unchanged within ``max_ratio``)."""
    if min(width, height) > 0 and max(width, height) / min(width, height) <= max_ratio:
        return width, height
    if width >= height:
        return width, max(height, math.ceil(width / max_ratio))
    return max(width, math.ceil(height / max_ratio)), height


def patch_grid(width: int, height: int, n_patches: int, layout: TokenLayout) -> tuple[int, int] | None:
    """(rows, cols) of the patch tokens of an image stored as ``width x height`` with ``n_patches`` patch tokens.

    The encoder saw the image scaled to its pixel budget, so the processor's resize of the stored size can round
    one side differently; then the factorisation of ``n_patches`` closest to the image's aspect ratio is used.
    None when nothing fits (e.g. tokens pooled at ingestion)."""
    if n_patches <= 0 or width <= 0 or height <= 0:
        return None
    pw, ph = padded_size(width, height, layout.max_aspect_ratio)
    h, w = smart_resize(ph, pw, layout.factor, layout.min_pixels, layout.max_pixels)
    rows, cols = h // layout.factor, w // layout.factor
    if rows * cols == n_patches:
        return rows, cols
    aspect = ph / pw
    best: tuple[float, tuple[int, int]] | None = None
    for r in range(1, n_patches + 1):
        if n_patches % r:
            continue
        c = n_patches // r
        err = abs(math.log((r / c) / aspect))
        if best is None or err < best[0]:
            best = (err, (r, c))
    # a grid whose aspect ratio is off by more than 25% is not this image's
    return best[1] if best is not None and best[0] < math.log(1.25) else None


def frame_patches(n_tokens: int, n_frames: int, layout: TokenLayout) -> list[slice] | None:
    """The patch tokens of each frame in a multivector of ``n_frames`` equal frames (a page is one frame)."""
    if n_frames < 1 or n_tokens % n_frames:
        return None
    per = n_tokens // n_frames
    n = per - layout.prefix - layout.suffix
    if n <= 0:
        return None
    return [slice(f * per + layout.prefix, f * per + layout.prefix + n) for f in range(n_frames)]


def query_words(n_query: int, layout: TokenLayout) -> slice:
    """The query tokens that carry its words (the prompt prefix and augmentation tokens left out, when there are
    words left)."""
    start, stop = layout.query_prefix, n_query - layout.query_suffix
    return slice(start, stop) if stop > start else slice(0, n_query)


def patch_heat(
    query: np.ndarray, doc: np.ndarray, patches: slice, *, margin: float = MARGIN
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-patch MaxSim contributions of ``query`` ([n_q, dim]) in ``doc`` ([n_t, dim]).

    Each query token's best patch, and the patches within ``margin`` of it, get its similarity (clipped at 0; when
    every such similarity is negative, as happens with random weights, each gets a count instead, so the page still
    shows where the tokens landed). Returns (heat over the patches, each query token's best patch, the share of the
    score's positive part whose best match is a patch at all rather than a prompt token)."""
    sims = query @ doc.T  # [n_q, n_t]
    best = sims.max(axis=1)
    arg = sims.argmax(axis=1)
    ps = sims[:, patches]
    near = ps >= (ps.max(axis=1, keepdims=True) - margin)
    heat = np.where(near, np.maximum(ps, 0.0), 0.0).sum(axis=0)
    if heat.sum() <= 0:
        heat = near.sum(axis=0).astype(np.float32)
    in_patch = (arg >= patches.start) & (arg < patches.stop)
    pos = np.maximum(best, 0.0)
    share = float(pos[in_patch].sum() / pos.sum()) if pos.sum() > 0 else 0.0
    return heat.astype(np.float32), ps.argmax(axis=1), share


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected parts of a boolean grid, each a list of (row, col)."""
    rows, cols = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        part, stack = [], [(int(r0), int(c0))]
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            part.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < rows and 0 <= cc < cols and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        out.append(part)
    return out


def _overlap(a: list[int], b: list[int]) -> bool:
    """Whether two inclusive cell boxes [r0, c0, r1, c1] share a cell."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def merge_boxes(boxes: list[list[int]]) -> list[list[int]]:
    """Union boxes (inclusive cells [r0, c0, r1, c1]) that overlap, until none do. (Parts that merely touch are
    one 8-connected part already; merging boxes that touch would chain scattered parts into one page-sized box.)"""
    boxes = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _overlap(boxes[i], boxes[j]):
                    a, b = boxes[i], boxes.pop(j)
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    merged = True
                    break
            if merged:
                break
    return boxes


def regions(
    heat: np.ndarray,
    grid: tuple[int, int],
    *,
    chosen: np.ndarray | None = None,
    terms: list[str] | None = None,
    threshold: float = THRESHOLD,
    max_regions: int = MAX_REGIONS,
    max_area: float = MAX_AREA,
    visible: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
) -> list[dict[str, Any]]:
    """A few boxes from per-patch ``heat`` on a ``grid`` of (rows, cols), best first.

    Patches at ``threshold`` of the hottest, and among the hottest ``max_area`` share of the grid, form 8-connected
    parts; their bounding boxes are merged where they overlap. Each box: ``x0, y0, x1, y1`` in normalised image
    coordinates (0..1, origin top left), ``score`` (its share of the whole grid's heat) and ``terms`` (the query
    tokens whose best patch lies in it, in query order, as text: joined they read as the words). ``visible`` is the
    original image's part of the encoded one (x0, y0, x1, y1), when it was padded."""
    rows, cols = grid
    h = heat.reshape(rows, cols)
    total = float(h.sum())
    if total <= 0:
        return []
    floor = float(np.quantile(h, 1.0 - max_area)) if max_area < 1 else 0.0
    mask = (h >= threshold * float(h.max())) & (h >= floor)
    cells = []
    for part in _components(mask):
        rs, cs = [p[0] for p in part], [p[1] for p in part]
        cells.append([min(rs), min(cs), max(rs), max(cs)])
    vx0, vy0, vx1, vy1 = visible
    out = []
    for r0, c0, r1, c1 in merge_boxes(cells):
        score = float(h[r0 : r1 + 1, c0 : c1 + 1].sum()) / total

        def nx(c: float) -> float:
            return min(1.0, max(0.0, (c / cols - vx0) / (vx1 - vx0)))

        def ny(r: float) -> float:
            return min(1.0, max(0.0, (r / rows - vy0) / (vy1 - vy0)))

        box = {"x0": nx(c0), "y0": ny(r0), "x1": nx(c1 + 1), "y1": ny(r1 + 1), "score": round(score, 4)}
        if box["x1"] <= box["x0"] or box["y1"] <= box["y0"]:
            continue  # all padding
        words: list[str] = []
        if chosen is not None and terms is not None:
            for t, p in enumerate(chosen.tolist()):
                if p >= 0 and r0 <= p // cols <= r1 and c0 <= p % cols <= c1 and t < len(terms):
                    w = terms[t]  # as the tokenizer wrote it (sub-word pieces keep their leading space)
                    if w.strip() and w not in words:
                        words.append(w)
        box["terms"] = words
        out.append(box)
    out.sort(key=lambda b: -b["score"])
    return out[:max_regions]


def visible_part(width: int, height: int, max_ratio: float) -> tuple[float, float, float, float]:
    """The original image's part (x0, y0, x1, y1, normalised) of the image the encoder saw after padding."""
    pw, ph = padded_size(width, height, max_ratio)
    x0 = (pw - width) // 2 / pw
    y0 = (ph - height) // 2 / ph
    return x0, y0, x0 + width / pw, y0 + height / ph


def item_regions(
    query: np.ndarray,
    doc: np.ndarray,
    *,
    width: int,
    height: int,
    n_frames: int,
    layout: TokenLayout,
    terms: list[str] | None = None,
) -> dict[str, Any] | None:
    """Regions of one page / image (``n_frames`` 1) or clip: ``{"grid": [rows, cols], "patch_share", "frames":
    [{"frame", "regions"}]}``, or None when the multivector does not fit the layout."""
    slices = frame_patches(len(doc), n_frames, layout)
    if slices is None:
        return None
    grid = patch_grid(width, height, slices[0].stop - slices[0].start, layout)
    if grid is None:
        return None
    words = query_words(len(query), layout)
    q = query[words]
    vis = visible_part(width, height, layout.max_aspect_ratio)
    per = len(doc) // n_frames
    frames, shares = [], []
    for f, s in enumerate(slices):
        start = f * per
        local = slice(s.start - start, s.stop - start)
        heat, chosen, share = patch_heat(q, doc[start : start + per], local)
        shares.append(share)
        frames.append({"frame": f, "regions": regions(heat, grid, chosen=chosen, terms=terms, visible=vis)})
    return {"grid": list(grid), "patch_share": round(float(np.mean(shares)), 4), "frames": frames}


_WORD = re.compile(r"\w+", re.UNICODE)
#: Words too common to be worth marking in a snippet.
STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "does", "do", "for", "from", "how", "in", "is", "it", "of"}
    | {"on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "why", "with"}
)


def highlights(text: str, query: str) -> list[list[int]]:
    """``[start, end]`` character spans of ``text`` holding a query word (case-insensitive; a word also matches its
    plural or a longer form sharing its first five letters, stop words left out)."""
    words = {w.lower() for w in _WORD.findall(query) if w.lower() not in STOPWORDS}
    if not words:
        return []
    stems = {w[:5] for w in words if len(w) >= 5}
    out = []
    for m in _WORD.finditer(text):
        w = m.group().lower()
        if w in words or w.rstrip("s") in words or (len(w) >= 5 and w[:5] in stems):
            out.append([m.start(), m.end()])
    return out


__all__ = [
    "MARGIN",
    "MAX_REGIONS",
    "THRESHOLD",
    "TokenLayout",
    "frame_patches",
    "highlights",
    "item_regions",
    "merge_boxes",
    "patch_grid",
    "patch_heat",
    "query_words",
    "regions",
    "smart_resize",
    "visible_part",
]
