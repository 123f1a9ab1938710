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


def test_the_warm_stages_transcribe_an_upload(stages, tmp_path) -> None:
    """The ingestion service's path (warm stages, text vectors after publishing) puts the words of an audio file
    into its items' text, at the item that spans them."""
    from media import speech_wav
    from mmrag.ingest.pipeline import ingest

    cfg, warm = stages
    assert warm.speech is not None
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"uri": str(tmp_path / "db")})})
    wav = tmp_path / "memo.wav"
    speech_wav(wav, [(11.0, "Please remember to water the garden plants.")], duration=16.0)
    summary = ingest(
        [str(wav)], cfg, collection="c", calibrate=False, optimize=False,
        runner=warm.without_text, text_after_publish=warm.text, names={str(wav): "upload:memo.wav"},
    )  # fmt: skip
    assert summary.audio == 2 and not summary.errors
    rows = LanceStore.from_config(cfg.store).table("items").to_arrow().to_pylist()
    text = {r["start_s"]: r["text"] for r in rows}
    assert "garden" in text[10.0].lower() and text[0.0] == ""
    assert all(r["text_vector"] is not None for r in rows if r["text"])
