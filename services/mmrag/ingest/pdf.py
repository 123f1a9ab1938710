"""PDF pages: rendered with PyMuPDF, bounded in pixels, with their text layer; failures per page.

PyMuPDF can lose data without raising: a truncated file is silently "repaired" and its lost pages
come back blank, a broken page-tree entry becomes an empty US-letter page. MuPDF's warnings are the
only trace, so they are read per page (``pymupdf.TOOLS.mupdf_warnings``, a per-process buffer:
PyMuPDF is not thread-safe anyway, so read one document at a time per process).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from PIL import Image

from mmrag.ingest.common import (
    BytesOrPath,
    clean_text,
    default_cfg,
    err_msg,
    read_head,
    source_name,
    thumbnail_png,
    wants_ocr,
)
from mmrag.ingest.records import DecodedItem, DecodeError

if TYPE_CHECKING:
    import pymupdf

    from mmrag.config import IngestConfig


def read_pdf(
    data_or_path: BytesOrPath,
    cfg: IngestConfig | None = None,
    *,
    source: str | None = None,
    render_pixels: int | None = None,
) -> Iterator[DecodedItem | DecodeError]:
    """Yield one :class:`DecodedItem` per page (in order), or a :class:`DecodeError` for what failed.

    Pages are rendered at ``cfg.dpi``, scaled down from the page size so that width x height stays
    within ``cfg.max_pixels`` (a 200-inch page never allocates gigabytes); RGB on white. A page that
    cannot be loaded, or that comes back blank from a file MuPDF had to repair, is an error for that
    page only. Pages past ``cfg.max_pages`` are reported in one ``skipped`` error.

    ``render_pixels``: the most pixels the caller keeps of a page (the pipeline stores <= 1 MP JPEGs and
    feeds the encoder far less). Pages are then rendered straight at that size, except pages that will be
    OCR'd (:func:`~mmrag.ingest.common.wants_ocr`), which keep ``cfg.dpi``: MuPDF rasterising at the
    target size costs about a third of rendering at 144 dpi and scaling down, and looks at least as good.
    """
    import pymupdf

    cfg = default_cfg(cfg)
    src = source_name(data_or_path, source)
    head, problem = read_head(data_or_path, src, cfg, 1024)
    if problem is not None:
        yield problem
        return
    if b"%PDF-" not in head[:1024]:
        yield DecodeError(
            src, f"not a PDF: no %PDF- header in the first 1024 bytes (starts with {head[:16]!r})", "unsupported"
        )
        return

    pymupdf.TOOLS.mupdf_warnings(reset=True)
    try:
        if isinstance(data_or_path, bytes):
            doc = pymupdf.open(stream=data_or_path, filetype="pdf")
        else:
            doc = pymupdf.open(os.fspath(data_or_path), filetype="pdf")
    except Exception as e:  # MuPDF raises FileDataError, RuntimeError, ValueError...
        yield DecodeError(src, f"corrupt PDF: MuPDF cannot open it ({err_msg(e)})", "corrupt")
        return

    with doc:
        if doc.needs_pass:
            yield DecodeError(
                src,
                "encrypted PDF: it needs a password to open; decrypt it "
                "(e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`) and ingest the copy",
                "encrypted",
            )
            return
        try:
            n_pages = doc.page_count
        except Exception as e:
            yield DecodeError(
                src,
                f"broken PDF page tree: MuPDF cannot count the pages ({err_msg(e)}; typically a /Count that "
                "does not match the pages listed); repair it with `qpdf in.pdf out.pdf` or "
                "`mutool clean in.pdf out.pdf` and ingest the copy",
                "corrupt",
            )
            return
        if n_pages == 0:
            yield DecodeError(src, "PDF has no pages", "empty")
            return
        doc_warnings = _warnings()
        damaged = bool(doc.is_repaired or doc_warnings)
        doc_note = (
            f"the file is damaged (MuPDF: {_first(doc_warnings)})"
            if doc_warnings
            else "the file is damaged (MuPDF had to repair it)"
        )

        contexts = page_contexts(doc, src, min(n_pages, cfg.max_pages))
        for i in range(min(n_pages, cfg.max_pages)):
            item = _read_page(doc, i, src, cfg, damaged, doc_note, render_pixels)
            if isinstance(item, DecodedItem) and contexts[i]:
                item = dataclasses.replace(item, context=contexts[i])
            yield item

        if n_pages > cfg.max_pages:
            yield DecodeError(
                src,
                f"PDF has {n_pages} pages; pages {cfg.max_pages + 1}-{n_pages} were not read "
                f"(ingest.max_pages={cfg.max_pages}): raise the limit or split the file",
                "skipped",
            )


#: Longest title and heading kept in a page's context; headings of sections starting on a page, at most.
_TITLE_CHARS, _MAX_STARTING = 160, 3


def doc_title(doc: Any, src: str) -> str:
    """The document's title: its metadata title, else the first lines of page 1 if they look like one, else the
    file name without its extension."""
    meta = (doc.metadata or {}).get("title") or ""
    meta = " ".join(meta.split())
    if len(meta) >= 4 and not meta.lower().startswith(("microsoft word", "untitled")):
        return meta[:_TITLE_CHARS]
    try:
        lines = [ln.strip() for ln in doc[0].get_text().splitlines() if ln.strip()]
    except Exception:
        lines = []
    head = " ".join(lines[:2])
    if lines and 8 <= len(head) <= _TITLE_CHARS and sum(c.isalpha() for c in head) > len(head) / 2:
        return head
    stem = os.path.splitext(os.path.basename(src))[0]
    return stem.replace("_", " ").replace("-", " ").strip() or src


def page_contexts(doc: Any, src: str, n_pages: int) -> list[str]:
    """Per page: ``title > enclosing section headings`` from the PDF outline, plus the headings of sections that
    start on the page (``; ``-separated). Pages of a PDF without an outline get the title alone."""
    title = doc_title(doc, src)
    try:
        toc = [(int(lvl), " ".join(str(t).split())[:_TITLE_CHARS], int(p)) for lvl, t, p, *_ in doc.get_toc()]
        # entries without a page (-1, 0) point nowhere; out-of-order ones would hold back every later one
        toc = sorted((e for e in toc if e[2] >= 1), key=lambda e: e[2])
    except Exception:  # a broken outline must not cost the pages
        toc = []
    out: list[str] = []
    stack: list[tuple[int, str]] = []
    j = 0
    for page in range(1, n_pages + 1):
        starting: list[str] = []
        while j < len(toc) and toc[j][2] <= page:
            lvl, t, p = toc[j]
            while stack and stack[-1][0] >= lvl:
                stack.pop()
            stack.append((lvl, t))
            if p == page and t:
                starting.append(t)
            j += 1
        path = " > ".join(t for _, t in stack if t)
        ctx = f"{title} > {path}" if path else title
        extra = [t for t in starting[:_MAX_STARTING] if t not in path]
        out.append(ctx + (f"; {'; '.join(extra)}" if extra else ""))
    return out


def _read_page(
    doc: pymupdf.Document,
    i: int,
    src: str,
    cfg: IngestConfig,
    damaged: bool,
    doc_note: str,
    render_pixels: int | None = None,
) -> DecodedItem | DecodeError:
    import pymupdf

    page_no = i + 1
    _warnings()  # start this page with an empty buffer
    try:
        page = doc.load_page(i)
        rect = page.rect
        if not (rect.width > 0 and rect.height > 0 and math.isfinite(rect.width * rect.height)):
            return DecodeError(
                src, f"page {page_no} has an empty or invalid page size ({rect})", "damaged_page", page=page_no
            )
        text = clean_text(page.get_text())
        max_pixels = cfg.max_pixels
        if render_pixels is not None and not wants_ocr(cfg, text):
            max_pixels = min(max_pixels, render_pixels)
        zoom = render_zoom(rect.width, rect.height, cfg.dpi, max_pixels)
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
        img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples, "raw", "RGB", pix.stride)
        # one colour and no text; getextrema() is C (Pixmap.is_unicolor takes ~1 s per page)
        blank = not text.strip() and all(lo == hi for lo, hi in img.getextrema())
    except Exception as e:
        return DecodeError(
            src,
            f"page {page_no} could not be parsed ({err_msg(e)}); the file is probably truncated or damaged",
            "damaged_page",
            page=page_no,
        )
    page_warnings = _warnings()
    if blank and (damaged or page_warnings):
        why = f"MuPDF: {_first(page_warnings)}" if page_warnings else doc_note
        return DecodeError(
            src,
            f"page {page_no} came back blank with no text from a damaged file ({why}); its content is "
            "lost: the file is probably truncated or corrupt, get an intact copy",
            "damaged_page",
            page=page_no,
        )
    notes = []
    if page_warnings:
        notes.append(f"MuPDF reported problems on this page, some content may be missing: {_first(page_warnings)}")
    if blank:
        notes.append("blank page")
    return DecodedItem(
        modality="page",
        source=src,
        index=i,
        page=page_no,
        images=[img],
        thumbnail_png=thumbnail_png(img, cfg.thumbnail_px),
        width=img.width,
        height=img.height,
        text=text,
        text_source="pdf" if text.strip() else None,
        warnings=notes,
    )


def render_zoom(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> float:
    """Zoom for a page of ``width_pt`` x ``height_pt`` points: ``dpi / 72``, lowered so that the
    pixmap MuPDF allocates (rounded outwards, so up to one pixel more per side) fits ``max_pixels``."""
    zoom = dpi / 72.0
    area = width_pt * height_pt * zoom * zoom
    if area > max_pixels:
        zoom *= math.sqrt(max_pixels / area)
    while zoom > 1e-6 and (math.ceil(width_pt * zoom) + 1) * (math.ceil(height_pt * zoom) + 1) > max_pixels:
        zoom *= 0.995
    return zoom


def _warnings() -> list[str]:
    import pymupdf

    text = pymupdf.TOOLS.mupdf_warnings(reset=True)
    return [w for w in text.splitlines() if w and not w.startswith("... repeated")]


def _first(warnings: list[str], n: int = 2) -> str:
    return "; ".join(warnings[:n]) + (f" (+{len(warnings) - n} more)" if len(warnings) > n else "")
