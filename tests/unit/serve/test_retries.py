"""The gateway retries an idempotent call once when its replica died under it, within a deadline, and nothing
else: a request's own error, or a second failure, reaches the caller."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from mmrag.serve.retries import Retries, replica_failed

pytestmark = pytest.mark.unit


class Flaky:
    def __init__(self, *errors: BaseException, result: str = "hits", delay_s: float = 0.0) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result
        self.delay_s = delay_s

    async def __call__(self) -> str:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def test_a_dead_replica_is_retried_once() -> None:
    r = Retries(deadline_s=5)
    fn = Flaky(ActorDiedError())
    assert asyncio.run(r.call("retriever.search", fn)) == "hits"
    assert fn.calls == 2 and r.retried == {"retriever.search": 1} and not r.failed

    fn = Flaky(ActorUnavailableError("unreachable", None))
    assert asyncio.run(r.call("reranker.scores", fn)) == "hits" and fn.calls == 2


def test_a_second_failure_and_other_errors_reach_the_caller() -> None:
    r = Retries(deadline_s=5)
    fn = Flaky(ActorDiedError(), ActorDiedError())
    with pytest.raises(ActorDiedError):
        asyncio.run(r.call("retriever.search", fn))
    assert fn.calls == 2 and r.failed == {"retriever.search": 1}

    fn = Flaky(ValueError("bad filter"))  # the request's own fault: the same on every replica
    with pytest.raises(ValueError):
        asyncio.run(r.call("retriever.search", fn))
    assert fn.calls == 1


def test_the_deadline_bounds_the_retry() -> None:
    r = Retries(deadline_s=0.3)
    slow_death = Flaky(ActorDiedError(), delay_s=0.4)  # died after the deadline: no time left to retry
    with pytest.raises(ActorDiedError):
        asyncio.run(r.call("retriever.search", slow_death))
    assert slow_death.calls == 1

    calls = []

    async def dies_then_hangs() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ActorDiedError()
        await asyncio.sleep(10)
        return "late"

    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(r.call("retriever.search", dies_then_hangs))
    assert time.monotonic() - t0 < 1.0  # the retry is cut at what remained of the deadline
    assert Retries(deadline_s=0).retried == {}
    with pytest.raises(ActorDiedError):
        asyncio.run(Retries(deadline_s=0).call("x", Flaky(ActorDiedError())))  # 0: never retried


def test_what_counts_as_a_replica_failure() -> None:
    assert replica_failed(ActorDiedError()) and replica_failed(ActorUnavailableError("x", None))
    assert not replica_failed(ValueError()) and not replica_failed(TimeoutError())
