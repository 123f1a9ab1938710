"""The ingestion service's jobs embed before they take the store's writer lease: while another writer holds the
store a job reads and embeds, then waits (saying so) without writing anything; once the lease is free it publishes
whole documents; the text vectors that follow are merged under the lease again. Real warm stages (tiny ColQwen2,
MiniLM), real LanceDB."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mmrag.config import load_config
from mmrag.store import LanceStore
from mmrag.store.lease import WriterLease

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory, mmrag_home: str):
    from mmrag.ingest.warm import WarmStages

    cfg = load_config("local-cpu", {"ingest": {"ocr": "never"}})
    return cfg, WarmStages(cfg)


def test_a_job_embeds_while_another_writer_holds_the_store(stages, tmp_path) -> None:
    from mmrag.ingest.pipeline import ingest

    cfg, warm = stages
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"uri": str(tmp_path / "db")})})
    store = LanceStore.from_config(cfg.store)
    other = WriterLease(store, purpose="another writer").acquire()
    waits: list[str] = []
    out: dict = {}

    def wait(message: str) -> float:
        waits.append(message)
        return 0.1

    def run() -> None:
        out["summary"] = ingest(
            [str(DATA / "coin.pdf")], cfg, collection="c", store=store, calibrate=False, optimize=False,
            runner=warm.without_text, text_after_publish=warm.text, lease_wait=wait,
        )  # fmt: skip

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 120
    while not waits and time.time() < deadline:
        time.sleep(0.1)
    assert waits, "the job never got to waiting for the lease"
    assert "another writer" in waits[0]
    assert not store.has_items() or store.count_items(visible_only=False) == 0  # embedded, nothing written
    n_waits = len(waits)
    time.sleep(0.5)
    assert len(waits) > n_waits  # still trying
    other.release()
    t.join(120)
    summary = out["summary"]
    assert summary.documents == 1 and summary.pages == 11 and not summary.errors
    assert store.count_items("c") == 11
    assert store.items_without_text_vectors("c").num_rows == 0  # merged after publishing
    assert summary.stage_seconds["embed"] > 0 and summary.stage_seconds["text_embed"] > 0
    # the job gave the lease back: another writer takes it at once
    WriterLease(store, purpose="next").acquire().release()
