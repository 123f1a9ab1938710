"""Store upkeep on a real embedded LanceDB: compaction and version cleanup keep what is searchable, and a reader
that opened the store before keeps reading; ``mmrag store optimize`` and its refusal under another writer."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import mmrag.store.upkeep as upkeep
from mmrag.cli.main import app
from mmrag.store import FinishedDocument, LanceStore
from mmrag.store import schema as S
from mmrag.store.lease import WriterLease

pytestmark = pytest.mark.unit
DIM = 4
runner = CliRunner()


def _rows(uri: str, content_hash: str, n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        mv = rng.standard_normal((3, DIM)).astype("float32")
        out.append(
            {
                "id": S.item_id("c", uri, content_hash, "page", i),
                "collection": "c",
                "doc_id": S.doc_id("c", uri),
                "source_uri": uri,
                "content_hash": content_hash,
                "modality": "page",
                "page": i + 1,
                "text": f"page {i} of {uri}",
                "multivector": mv.tolist(),
                "pooled": mv.mean(0).tolist(),
                "n_tokens": 3,
                "model_id": "m",
                "ingested_at": dt.datetime.now(dt.UTC),
                "visible": False,
            }
        )
    return pa.Table.from_pylist(out, schema=S.items_schema(DIM))


def _ingest_small(store: LanceStore, docs: int = 6) -> None:
    """Many small commits, as ingestion makes them: appends, publishes, replaced versions, a deletion."""
    for d in range(docs):
        uri = f"/doc{d}.pdf"
        for h in ("v1", "v2") if d % 2 else ("v1",):
            store.begin_documents("c", [(uri, h)])
            store.add_items(_rows(uri, h, 3))
            store.finish_documents([FinishedDocument("c", uri, h, "pdf", 3, 0, "m")])
    store.delete_document("c", "/doc0.pdf")
    store.refresh_text_index()
    store.refresh_scalar_indexes()


def _visible(store: LanceStore) -> tuple[int, list[str], int]:
    fts = store.table(S.ITEMS).search("page", query_type="fts").where("visible = true").limit(1000).to_list()
    return store.count_items(), sorted(r["id"] for r in fts), len(store.documents())


@pytest.fixture
def store(tmp_path, monkeypatch) -> LanceStore:
    # the versions here are milliseconds apart: a shorter margin than production's, and the last versions of the
    # tables made after it, so that the versions before them are old enough for a cleanup to remove
    monkeypatch.setattr(upkeep, "CLOCK_MARGIN_S", 0.3)
    s = LanceStore(str(tmp_path / "db"))
    s.ensure_tables(DIM)
    _ingest_small(s)
    time.sleep(0.5)
    s.finish_documents([FinishedDocument("c", "/doc4.pdf", "v1", "pdf", 3, 0, "m")])  # a no-op republish
    s.refresh_scalar_indexes()
    return s


def test_optimize_compacts_and_removes_old_versions_keeping_what_is_searchable(store: LanceStore) -> None:
    seen = _visible(store)
    assert seen[0] == 15 and len(seen[1]) == 15 and seen[2] == 5
    reader = LanceStore(store.uri, read_consistency_s=None)  # pinned to the versions current now
    assert reader.count_items() == 15
    with WriterLease(store, purpose="test") as lease:
        report = store.optimize(keep_versions_s=0, lease=lease)
    items = report["tables"][S.ITEMS]
    assert items["fragments"][1] < items["fragments"][0]
    assert items["versions"][1] < items["versions"][0]
    assert items["rows"][1] <= items["rows"][0]  # deleted rows are gone for good
    assert report["tables"][S.DOCUMENTS]["versions"][1] < report["tables"][S.DOCUMENTS]["versions"][0]
    assert _visible(LanceStore(store.uri)) == seen
    # the version a reader was on when the optimize began is kept (only versions superseded before are removed)
    assert reader.count_items() == 15
    assert sorted(reader.get_items(seen[1], ["id"])) == seen[1]


def test_versions_within_the_retention_are_kept(store: LanceStore) -> None:
    with WriterLease(store, purpose="test") as lease:
        report = store.optimize(keep_versions_s=3600, lease=lease)
    items = report["tables"][S.ITEMS]
    assert items["fragments"][1] < items["fragments"][0]
    assert items["versions"][1] > items["versions"][0]  # compaction adds one, none is removed


def test_the_cleanup_cutoff_keeps_the_version_current_when_the_window_began() -> None:
    now = dt.datetime.now()
    versions = [{"version": i, "timestamp": now - dt.timedelta(hours=h)} for i, h in enumerate((5, 3, 2, 0.5))]
    cutoff = upkeep._cleanup_cutoff(versions, 3600).total_seconds()
    assert 2 * 3600 < cutoff < 3 * 3600  # keeps the 2 h old version (current until 0.5 h ago), removes older ones
    assert upkeep._cleanup_cutoff(versions[-1:], 3600).total_seconds() >= 3600


def test_cli_store_optimize_prints_before_and_after(store: LanceStore) -> None:
    res = runner.invoke(app, ["store", "optimize", "--db", store.uri, "--older-than", "0s", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    items = report["tables"][S.ITEMS]
    assert items["fragments"][1] < items["fragments"][0] and items["versions"][1] < items["versions"][0]
    text = runner.invoke(app, ["store", "optimize", "--db", store.uri])
    assert text.exit_code == 0 and f"{S.ITEMS}: fragments" in text.stdout


def test_cli_store_optimize_and_delete_are_refused_while_another_writer_holds_the_store(store: LanceStore) -> None:
    seen = _visible(store)
    versions = len(store.table(S.ITEMS).list_versions())
    with WriterLease(LanceStore(store.uri), purpose="ingest into c") as other:
        res = runner.invoke(app, ["store", "optimize", "--db", store.uri])
        said = " ".join(res.stderr.split())  # rich wraps long lines
        assert res.exit_code == 2
        assert "another writer" in said and other.holder in said and "until" in said
        gone = runner.invoke(app, ["delete", "/doc1.pdf", "--db", store.uri, "-c", "c"])
        assert gone.exit_code == 2 and other.holder in " ".join(gone.stderr.split())
    assert _visible(LanceStore(store.uri)) == seen
    assert len(LanceStore(store.uri).table(S.ITEMS).list_versions()) == versions  # nothing written


def test_bad_duration_is_a_usage_error(store: LanceStore) -> None:
    res = runner.invoke(app, ["store", "optimize", "--db", store.uri, "--older-than", "soon"])
    assert res.exit_code == 2 and "not a duration" in res.output
