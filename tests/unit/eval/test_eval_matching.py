"""Matching rules: item id, page, video overlap, whole documents, no double credit."""

from __future__ import annotations

import pytest

from mmrag.eval.data import EvalInputError, Qrel
from mmrag.eval.matching import Judge, overlaps, qrel_matches

pytestmark = pytest.mark.unit


def page(src: str, p: int, id_: str = "") -> dict:
    return {"id": id_ or f"{src}#{p}", "source_uri": src, "modality": "page", "page": p}


def clip(src: str, s: float, e: float) -> dict:
    return {"id": f"{src}@{s}", "source_uri": src, "modality": "clip", "start_s": s, "end_s": e}


def test_item_id_and_page() -> None:
    assert qrel_matches(Qrel("q", 1, item_id="x"), page("/d/a.pdf", 1, "x"))
    assert not qrel_matches(Qrel("q", 1, item_id="x"), page("/d/a.pdf", 1, "y"))
    q = Qrel("q", 1, source="a.pdf", page=3, source_uri="/d/a.pdf")
    assert qrel_matches(q, page("/d/a.pdf", 3))
    assert not qrel_matches(q, page("/d/a.pdf", 4))
    assert not qrel_matches(q, page("/e/a.pdf", 3))  # resolved: only the stored document it named


def test_unresolved_source_uses_the_naming_rule() -> None:
    """Against a server the qrel is not resolved; the hit's source (HTTP name) is matched by basename/suffix."""
    q = Qrel("q", 1, source="docs/a.pdf", page=2)
    assert qrel_matches(q, {"source": "/x/docs/a.pdf", "page": 2})
    assert not qrel_matches(q, {"source": "/x/other/a.pdf", "page": 2})


@pytest.mark.parametrize(
    ("clip_span", "qrel_span", "match"),
    [
        ((0, 5), (4, 8), True),  # 1 s shared
        ((0, 5), (4.5, 8), False),  # 0.5 s shared, half the shorter (3.5 s) is 1.75 s
        ((0, 5), (4.6, 5.0), True),  # 0.4 s range wholly inside: half of it is covered
        ((0, 5), (4.8, 5.4), False),  # 0.2 s of a 0.6 s range: less than half
        ((0, 5), (3.0, 3.0), True),  # a point inside the clip
        ((0, 5), (5.0, 9.0), False),  # touching ends share nothing
        ((0, 5), (6.0, 6.0), False),  # a point outside
        ((2, 12), (0, 30), True),  # 10 s shared
    ],
)
def test_video_overlap(clip_span: tuple, qrel_span: tuple, match: bool) -> None:
    assert overlaps(*clip_span, *qrel_span) is match
    q = Qrel("q", 1, source="v.mp4", start_s=qrel_span[0], end_s=qrel_span[1], source_uri="/v.mp4")
    assert qrel_matches(q, clip("/v.mp4", *clip_span)) is match
    assert not qrel_matches(q, page("/v.mp4", 1))  # a hit without times


def test_whole_document_qrel() -> None:
    q = Qrel("q", 1, source="photo.jpg", source_uri="/p/photo.jpg")
    assert qrel_matches(q, {"id": "i", "source_uri": "/p/photo.jpg", "modality": "image"})


def test_no_double_credit_and_best_grade_first() -> None:
    v = "/v.mp4"
    qrels = {
        "q": [
            Qrel("q", 1, source="v.mp4", start_s=0, end_s=4, source_uri=v),
            Qrel("q", 3, source="v.mp4", start_s=3, end_s=8, source_uri=v),
            Qrel("q", 2, source="a.pdf", page=1, source_uri="/a.pdf"),
            Qrel("q", 0, source="a.pdf", page=2, source_uri="/a.pdf"),
        ]
    }
    j = Judge(qrels).judge(
        "q",
        [
            clip(v, 2, 6),  # overlaps both ranges: takes the grade-3 one
            clip(v, 5, 7),  # matches only the grade-3 range (already credited): 0, a duplicate
            page("/a.pdf", 2),  # judged not relevant
            page("/a.pdf", 1),
            page("/a.pdf", 1, "again"),  # the same page once more: no double credit
            clip(v, 0, 3),  # the grade-1 range, still uncredited
        ],
    )
    assert j.gains == [3, 0, 0, 2, 0, 1]
    assert j.duplicates == 2
    assert j.matched[0] == "/v.mp4 3-8s" and j.matched[1] is None


def test_ambiguous_source_against_a_server() -> None:
    q = Qrel("q", 1, source="a.pdf", page=1, where="qrels.jsonl:7")
    judge = Judge({"q": [q]})
    judge.judge("q", [{"source": "/x/a.pdf", "page": 1}])
    with pytest.raises(EvalInputError, match=r"qrels\.jsonl:7: source 'a.pdf' is ambiguous"):
        judge.judge("q", [{"source": "/y/a.pdf", "page": 1}])
