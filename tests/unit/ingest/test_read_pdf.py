"""read_pdf on a real 11-page paper and on PDFs that are broken in the ways real files are."""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from ingest_builders import COIN_PAGES, FONT, SQUARE, make_pdf, page_obj, pdf_with_kids, stream
from PIL import Image

from mmrag.config import IngestConfig
from mmrag.ingest.common import clean_text
from mmrag.ingest.pdf import render_zoom
from mmrag.ingest.readers import DecodedItem, DecodeError, read_any, read_pdf

pytestmark = pytest.mark.unit

A4_PT = (595.28, 841.89)


def split(records: list) -> tuple[list[DecodedItem], list[DecodeError]]:
    items = [r for r in records if isinstance(r, DecodedItem)]
    errors = [r for r in records if isinstance(r, DecodeError)]
    assert len(items) + len(errors) == len(records)
    return items, errors


def ink(img: Image.Image) -> float:
    """Fraction of pixels that are clearly not white."""
    return float((np.asarray(img.convert("L")) < 200).mean())


@pytest.fixture(scope="module")
def coin_items(coin_pdf: Path) -> list[DecodedItem]:
    items, errors = split(list(read_pdf(coin_pdf, IngestConfig(dpi=72, thumbnail_px=128))))
    assert errors == []
    return items


# ----------------------------------------------------------------------------------- real pages
def test_every_page_in_order(coin_items: list[DecodedItem], coin_pdf: Path) -> None:
    assert [it.page for it in coin_items] == list(range(1, COIN_PAGES + 1))
    assert [it.index for it in coin_items] == list(range(COIN_PAGES))
    assert {it.modality for it in coin_items} == {"page"}
    assert {it.source for it in coin_items} == {os.fspath(coin_pdf)}
    assert all(it.start_s is None and it.frame_ts is None for it in coin_items)


def test_text_layer_is_kept(coin_items: list[DecodedItem]) -> None:
    first = coin_items[0].text
    assert "Conditional Inference" in first and "Hothorn" in first
    assert "independence_test" in coin_items[4].text  # R code on page 5
    assert "Streitberg" in coin_items[10].text  # references on the last page
    assert all(it.text_source == "pdf" for it in coin_items)


def test_rendered_pixels_show_the_page(coin_items: list[DecodedItem]) -> None:
    for it in coin_items:
        (img,) = it.images
        assert img.mode == "RGB" and img.size == (it.width, it.height)
        # A4 at 72 dpi, MuPDF rounds the pixmap outwards
        assert abs(it.width - A4_PT[0]) <= 2 and abs(it.height - A4_PT[1]) <= 2
        assert 0.005 < ink(img) < 0.5, f"page {it.page} looks blank or black"
        corner = np.asarray(img)[:20, :20]
        assert corner.min() >= 250, "the page background is white"


def test_thumbnails(coin_items: list[DecodedItem]) -> None:
    for it in coin_items:
        thumb = Image.open(io.BytesIO(it.thumbnail_png))
        assert thumb.format == "PNG" and max(thumb.size) == 128
        assert abs(thumb.width / thumb.height - it.width / it.height) < 0.02


def test_dpi_and_pixel_budget(coin_pdf: Path) -> None:
    data = coin_pdf.read_bytes()
    (hi,) = [r for r in read_pdf(data, IngestConfig(dpi=144), source="coin") if r.page == 1]
    assert isinstance(hi, DecodedItem) and hi.source == "coin"
    assert abs(hi.width - 2 * A4_PT[0]) <= 2
    small = IngestConfig(dpi=300, max_pixels=100_000)
    for it in read_pdf(data, small):
        assert isinstance(it, DecodedItem)
        assert it.width * it.height <= 100_000
        assert abs(it.width / it.height - A4_PT[0] / A4_PT[1]) < 0.01


def test_max_pages_reports_the_rest(coin_pdf: Path) -> None:
    items, errors = split(list(read_pdf(coin_pdf, IngestConfig(dpi=36, max_pages=3))))
    assert [it.page for it in items] == [1, 2, 3]
    (err,) = errors
    assert err.code == "skipped" and "11 pages" in err.reason and "4-11" in err.reason
    assert "ingest.max_pages=3" in err.reason


@pytest.mark.parametrize(("w", "h"), [(595, 842), (14400, 14400), (1, 14400), (14400, 0.5), (3, 3)])
@pytest.mark.parametrize("budget", [10_000, 4_000_000])
def test_render_zoom_bounds_the_pixmap(w: float, h: float, budget: int) -> None:
    z = render_zoom(w, h, 144, budget)
    assert (math.ceil(w * z) + 1) * (math.ceil(h * z) + 1) <= budget
    assert z <= 2.0


def test_corpus_reference_card_if_present() -> None:
    card = Path("/work/shared/corpus/pdf/asyRefCard.pdf")
    if not card.exists():
        pytest.skip("the shared corpus is not next to this checkout")
    items, errors = split(list(read_pdf(card, IngestConfig(dpi=72))))
    assert errors == [] and len(items) == 3
    assert all(len(it.text) > 1000 and ink(it.images[0]) > 0.02 for it in items)


# ----------------------------------------------------------------------------------- hostile
def test_giant_mediabox_is_scaled_not_allocated() -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=200 * 72, height=200 * 72)  # 200 x 200 inches
    page.insert_text((500, 3000), "giant", fontsize=2000)
    data = doc.tobytes()
    t = time.perf_counter()
    (it,) = list(read_pdf(data, IngestConfig()))  # 144 dpi would be 28800 x 28800 = 829 MP
    assert time.perf_counter() - t < 20
    assert isinstance(it, DecodedItem)
    assert it.width * it.height <= 4_000_000 and abs(it.width - it.height) <= 1
    assert "giant" in it.text
    assert ink(it.images[0]) > 0.01


def test_truncated_pdf_loses_pages_not_the_document(coin_pdf: Path) -> None:
    data = coin_pdf.read_bytes()
    items, errors = split(list(read_pdf(data[: int(len(data) * 0.8)], IngestConfig(dpi=36), source="cut.pdf")))
    assert sorted([it.page for it in items] + [e.page for e in errors]) == list(range(1, COIN_PAGES + 1))
    assert {1, 2, 3} <= {it.page for it in items}
    assert "Conditional Inference" in items[0].text
    lost = {e.page for e in errors}
    assert {5, 6, 7} <= lost, "MuPDF repairs the file and returns these pages blank: they must be flagged"
    for e in errors:
        assert e.code == "damaged_page" and e.source == "cut.pdf"
        assert f"page {e.page} " in e.reason and "truncated" in e.reason


def test_encrypted_pdf_needs_a_password() -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret plans")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user", owner_pw="owner")
    (err,) = list(read_pdf(data))
    assert isinstance(err, DecodeError) and err.code == "encrypted" and err.page is None
    assert "password" in err.reason and "qpdf --decrypt" in err.reason


def test_owner_password_only_still_reads() -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "printable but locked")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", permissions=0)
    (it,) = list(read_pdf(data))
    assert isinstance(it, DecodedItem) and "printable but locked" in it.text


def test_html_saved_as_pdf(write) -> None:  # type: ignore[no-untyped-def]
    path = write("invoice.pdf", b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>")
    (err,) = list(read_pdf(path))
    assert err.code == "unsupported" and "no %PDF- header" in err.reason and "<!DOCTYPE" in err.reason
    (err,) = list(read_any(path))
    assert err.code == "unsupported" and "HTML" in err.reason


def test_empty_and_garbage(write) -> None:  # type: ignore[no-untyped-def]
    (err,) = list(read_pdf(write("empty.pdf", b"")))
    assert err.code == "empty" and "empty file" in err.reason
    (err,) = list(read_pdf(b"%PDF-1.7\n" + bytes(range(256)) * 4))
    assert err.code == "corrupt" and "MuPDF cannot open it" in err.reason


def test_zero_pages() -> None:
    data = make_pdf([b"<</Type/Catalog/Pages 2 0 R>>", b"<</Type/Pages/Count 0/Kids[]>>"])
    (err,) = list(read_pdf(data))
    assert err.code == "empty" and "no pages" in err.reason


def test_lying_page_count() -> None:
    # /Count 100 for one page: MuPDF's page_count raises, nothing can be read
    (err,) = list(read_pdf(pdf_with_kids(b"3 0 R", count=100)))
    assert err.code == "corrupt" and "page tree" in err.reason and "/Count" in err.reason
    # /Count 5 for one page: page_count believes it; the four missing pages fail one by one
    items, errors = split(list(read_pdf(pdf_with_kids(b"3 0 R", count=5))))
    assert [it.page for it in items] == [1] and "square" in items[0].text
    assert [e.page for e in errors] == [2, 3, 4, 5]
    assert all(e.code == "damaged_page" and f"page {e.page} could not be parsed" in e.reason for e in errors)


def test_synthetic_page_renders() -> None:
    (it,) = list(read_pdf(pdf_with_kids(b"3 0 R", count=1), IngestConfig(dpi=72)))
    assert isinstance(it, DecodedItem) and it.warnings == []
    assert (it.width, it.height) == (200, 200) and "square" in it.text
    r, g, b = it.images[0].getpixel((70, 130))  # inside the blue square (PDF y grows upwards)
    assert b > 200 and r < 50 and g < 50


def test_one_broken_page_does_not_hide_the_others() -> None:
    # the second kid points back at the page tree itself: MuPDF raises for that page only
    items, errors = split(list(read_pdf(pdf_with_kids(b"3 0 R 2 0 R", count=2))))
    assert [it.page for it in items] == [1] and "square" in items[0].text
    (err,) = errors
    assert err.page == 2 and err.code == "damaged_page" and "page 2 could not be parsed" in err.reason
    assert "cycle" in err.reason


def test_non_page_in_page_tree_is_not_a_blank_page() -> None:
    # MuPDF substitutes an empty US-letter page for a kid that is not a page, without raising
    items, errors = split(list(read_pdf(pdf_with_kids(b"3 0 R 4 0 R", count=2))))
    assert [it.page for it in items] == [1]
    (err,) = errors
    assert err.page == 2 and err.code == "damaged_page" and "blank" in err.reason and "non-page object" in err.reason


def test_blank_page_of_a_healthy_file_is_kept_with_a_note() -> None:
    data = make_pdf(
        [
            b"<</Type/Catalog/Pages 2 0 R>>",
            b"<</Type/Pages/Count 2/Kids[3 0 R 6 0 R]>>",
            page_obj(),
            SQUARE,
            FONT,
            b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]/Contents 7 0 R>>",
            stream(b""),
        ]
    )
    items, errors = split(list(read_pdf(data)))
    assert errors == [] and [it.page for it in items] == [1, 2]
    assert items[1].warnings == ["blank page"] and items[1].text_source is None
    assert items[0].warnings == []


def test_damaged_content_stream_is_flagged() -> None:
    bad = b"<</Length 30/Filter/FlateDecode>>stream\n" + b"x" * 30 + b"\nendstream"
    data = make_pdf(
        [
            b"<</Type/Catalog/Pages 2 0 R>>",
            b"<</Type/Pages/Count 1/Kids[3 0 R]>>",
            b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]/Contents 4 0 R>>",
            bad,
        ]
    )
    (err,) = list(read_pdf(data))
    assert err.code == "damaged_page" and err.page == 1 and "zlib" in err.reason


def test_text_is_safe_to_store() -> None:
    # NULs and lone surrogates occur in real text layers and break Arrow/JSON encoders
    assert clean_text("a\x00b\ud800c") == "ab?c"
    assert clean_text("Stra\u00dfe \ufb01") == "Stra\u00dfe \ufb01"


def test_pages_carry_their_title_and_section_headings(tmp_path) -> None:
    """The dense text channel embeds each page with its place in the document (title > section > subsection)."""
    import pymupdf

    from mmrag.ingest.pdf import page_contexts

    doc = pymupdf.open()
    for i in range(4):
        doc.new_page().insert_text((72, 72), f"body of page {i + 1}")
    doc.set_metadata({"title": "Plotting Manual"})
    doc.set_toc([[1, "Commands", 1], [2, "Plot", 2], [2, "Set", 3], [3, "Set style", 3], [1, "Index", 4]])
    got = page_contexts(doc, "/x/manual.pdf", 4)
    assert got[0] == "Plotting Manual > Commands"
    assert got[1] == "Plotting Manual > Commands > Plot"
    assert got[2] == "Plotting Manual > Commands > Set > Set style"
    assert got[3] == "Plotting Manual > Index"
    bare = pymupdf.open()
    bare.new_page()
    assert page_contexts(bare, "/x/my_report-2024.pdf", 1) == ["my report 2024"]  # no title, no text: the file name
