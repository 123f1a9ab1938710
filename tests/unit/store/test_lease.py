"""The writer lease on a real embedded LanceDB: one holder, a clear refusal, expiry, renewal, release."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from pydantic import ValidationError

from mmrag.config import StoreWriterConfig
from mmrag.store import LanceStore
from mmrag.store.lease import LeaseHeldError, LeaseLostError, WriterLease, current_holder

pytestmark = pytest.mark.unit


@pytest.fixture
def uri(tmp_path) -> str:
    return str(tmp_path / "db")


def _lease(uri: str, purpose: str, *, ttl_s: float = 60.0, renew_s: float = 15.0) -> WriterLease:
    return WriterLease(LanceStore(uri), ttl_s=ttl_s, renew_s=renew_s, purpose=purpose)


def _crash(lease: WriterLease) -> None:
    """Stop renewing without releasing: what a killed process leaves behind."""
    lease._stop.set()
    lease._thread.join()


def test_second_writer_is_refused_with_the_holder_and_times(uri: str) -> None:
    with _lease(uri, "ingest into docs") as first:
        with pytest.raises(LeaseHeldError) as err:
            _lease(uri, "other").acquire()
        msg = str(err.value)
        assert first.holder in msg and "ingest into docs" in msg
        assert "took its lease at" in msg and "UTC" in msg and "nothing was written" in msg
        first.ensure_held()  # the refusal took nothing from the holder
        assert current_holder(LanceStore(uri))["holder"] == first.holder
    assert current_holder(LanceStore(uri)) is None


def test_a_crashed_writers_lease_expires_and_it_then_knows_it_lost(uri: str) -> None:
    crashed = _lease(uri, "crashed", ttl_s=1.0, renew_s=0.4).acquire()
    _crash(crashed)
    with pytest.raises(LeaseHeldError):
        _lease(uri, "too early").acquire()
    time.sleep(1.3)
    with _lease(uri, "next") as nxt:
        nxt.ensure_held()
        time.sleep(0.1)
        with pytest.raises(LeaseLostError, match="next"):  # its own check renews once: the token is not its own
            crashed.ensure_held()
    crashed.release()  # a lost lease is not released over the new holder's


def test_the_heartbeat_keeps_the_lease_past_its_ttl(uri: str) -> None:
    with _lease(uri, "long run", ttl_s=1.0, renew_s=0.3) as held:
        time.sleep(2.5)
        with pytest.raises(LeaseHeldError, match="long run"):
            _lease(uri, "other").acquire()
        held.ensure_held()


def test_released_on_normal_exit_and_on_error(uri: str) -> None:
    with _lease(uri, "ok"):
        pass
    _lease(uri, "after ok").acquire().release()
    with pytest.raises(RuntimeError), _lease(uri, "failing"):
        raise RuntimeError("boom")
    with _lease(uri, "after error") as after:
        after.ensure_held()


def test_release_never_frees_another_writers_lease(uri: str) -> None:
    old = _lease(uri, "old", ttl_s=0.5, renew_s=0.2).acquire()
    _crash(old)
    time.sleep(0.7)
    with _lease(uri, "new") as new:
        old._lost = None  # even a holder unaware of losing it releases only its own token
        old.release()
        assert current_holder(LanceStore(uri))["holder"] == new.holder


def _race(uri: str, name: str, barrier) -> str | None:
    lease = WriterLease(LanceStore(uri), purpose=name)
    barrier.wait()
    try:
        lease.acquire()
    except LeaseHeldError:
        return None
    lease._stop.set()  # keep it held (no release) so that every racer sees the winner
    return name


def test_exactly_one_of_several_racing_processes_gets_it(uri: str) -> None:
    ctx = mp.get_context("spawn")
    _lease(uri, "setup").acquire().release()  # the table exists: a race for the row, not for its creation
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        barrier = manager.Barrier(3)
        won = [w for w in pool.starmap(_race, [(uri, f"racer {i}", barrier) for i in range(3)]) if w]
    assert len(won) == 1
    assert current_holder(LanceStore(uri))["holder"].endswith(won[0])


def test_config_keeps_renewal_well_inside_the_ttl() -> None:
    assert StoreWriterConfig().lease_ttl_s == 60
    with pytest.raises(ValidationError, match="at most half"):
        StoreWriterConfig(lease_ttl_s=10, lease_renew_s=6)
