"""The ingestion service's input rules (file names, object-store URIs) and its job records in a real LanceDB."""

from __future__ import annotations

import pytest

from mmrag.serve.ingestor import UploadError, check_uri, shown_name, upload_name
from mmrag.store import LanceStore
from mmrag.store.jobs import JobBook, new_job

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\me\\scan 1.png", "scan 1.png"),
        ("../../etc/passwd", "passwd"),
        ("dir/sub/Vide\u0301o.mp4", "Vidéo.mp4"),  # NFC: one document per visible name
    ],
)
def test_upload_names_are_base_names(raw: str, name: str) -> None:
    assert upload_name(raw) == name
    assert shown_name("upload:" + name) == name


@pytest.mark.parametrize("raw", ["", "..", "a/", "bad\x00name.pdf", "tab\tname.pdf", "x" * 300 + ".pdf"])
def test_unusable_names_are_refused(raw: str) -> None:
    with pytest.raises(UploadError):
        upload_name(raw)


def test_only_allow_listed_object_store_uris() -> None:
    allowed = ["s3://bucket/docs/", "gs://other/"]
    check_uri("s3://bucket/docs/a.pdf", allowed)
    check_uri("gs://other/deep/b.mp4", allowed)
    for bad in (
        "/etc/passwd",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "https://example.com/a.pdf",
        "s3://bucket/private/a.pdf",
        "s3://bucket/docs/../private/a.pdf",
        "s3://bucket/docs/a\n.pdf",
    ):
        with pytest.raises(UploadError):
            check_uri(bad, allowed)
    with pytest.raises(UploadError, match="accepts no URIs"):
        check_uri("s3://bucket/docs/a.pdf", [])


def test_job_records_round_trip_and_unfinished_ones_are_found(tmp_path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    book = JobBook(store)
    assert book.get("job_nope") is None and book.unfinished() == []
    a = new_job("docs", [{"name": "a.pdf", "bytes": 3}], key_id="k1")
    b = new_job("docs", [{"name": "b.pdf", "bytes": 4}], key_id=None)
    book.save(a)
    book.save(b)
    a.update(state="running", started_at="now")
    book.save(a)  # an update, not a second row
    b.update(state="done")
    book.save(b)
    got = book.get(a["id"])
    assert got is not None and got["state"] == "running" and got["files"][0]["name"] == "a.pdf"
    assert [j["id"] for j in book.unfinished()] == [a["id"]]
    assert store.table("ingest_jobs").count_rows() == 2


def test_empty_collections_are_recorded_listed_and_forgotten(tmp_path) -> None:
    store = LanceStore(str(tmp_path / "db"))
    assert store.create_collection("reports") is True
    assert store.create_collection("reports") is False
    assert store.collections() == {"reports"}
    assert store.stats()["collections"] == {"reports": {"items": {}, "documents": 0, "errors": 0}}
    with pytest.raises(ValueError):
        store.create_collection("no spaces please")
    store.forget_collection("reports")
    assert store.collections() == set()
