"""Coalescer: submissions made while a call runs go into the next call together, results go back to their owners."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mmrag.serve.coalesce import Coalescer

pytestmark = pytest.mark.unit


def test_submissions_during_a_call_are_merged_into_the_next_one() -> None:
    gate = threading.Event()
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(5)  # the first call is slow: everything else queues behind it
        return [x * 10 for x in items]

    async def main() -> list[list[int]]:
        c = Coalescer(fn, max_items=4)
        first = asyncio.create_task(c.run([0]))
        await asyncio.sleep(0.05)  # the first call is running
        rest = [asyncio.create_task(c.run([i, i + 100])) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        return [await first, *[await t for t in rest]]

    out = asyncio.run(main())
    assert out == [[0], [10, 1010], [20, 1020], [30, 1030]]
    # max_items 4: two submissions of two fit the second call, the third goes into a third call
    assert calls == [[0], [1, 101, 2, 102], [3, 103]]


def test_a_failing_call_fails_its_submissions_only_and_cancelled_ones_are_skipped() -> None:
    gate = threading.Event()
    calls: list[list[str]] = []

    def fn(items: list[str]) -> list[str]:
        calls.append(list(items))
        if items == ["slow"]:
            gate.wait(5)
        if "boom" in items:
            raise RuntimeError("model failed")
        return [x.upper() for x in items]

    async def main() -> tuple[object, ...]:
        c = Coalescer(fn, max_items=1)  # one submission per call: boom and ok are separate calls
        slow = asyncio.create_task(c.run(["slow"]))
        await asyncio.sleep(0.05)
        cancelled = asyncio.create_task(c.run(["never"]))
        boom = asyncio.create_task(c.run(["boom"]))
        ok = asyncio.create_task(c.run(["ok"]))
        await asyncio.sleep(0)
        cancelled.cancel()
        gate.set()
        boom_result = await asyncio.gather(boom, return_exceptions=True)
        return await slow, boom_result[0], await ok

    slow, boom, ok = asyncio.run(main())
    assert slow == ["SLOW"] and ok == ["OK"]
    assert isinstance(boom, RuntimeError) and "model failed" in str(boom)
    assert calls == [["slow"], ["boom"], ["ok"]]  # the cancelled submission was never computed


def test_a_result_count_mismatch_is_an_error() -> None:
    async def main() -> None:
        await Coalescer(lambda items: [], max_items=2).run([1])

    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        asyncio.run(main())
    with pytest.raises(ValueError):
        Coalescer(lambda items: items, max_items=0)
