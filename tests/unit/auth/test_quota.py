"""Per-key quotas with limits' moving windows: requests per second and generated tokens per minute, the 429's
Retry-After, keys without limits never counted; and the book shared through a real Ray actor."""

from __future__ import annotations

import asyncio
import time

import pytest

from mmrag.auth.keys import Principal
from mmrag.auth.quota import QuotaBook, QuotaExceeded, Quotas, rate_item

pytestmark = pytest.mark.unit


def _p(key_id: str = "k1", rate: float | None = None, tokens: int | None = None) -> Principal:
    return Principal(key_id=key_id, name="t", collections=None, scope="read", rate_per_s=rate, tokens_per_min=tokens)


def test_rate_items() -> None:
    assert (rate_item(5).amount, rate_item(5).multiples) == (5, 1)
    assert (rate_item(0.25).amount, rate_item(0.25).multiples) == (1, 4)


def test_requests_per_second_then_429_with_retry_after() -> None:
    q = Quotas(None, book=QuotaBook())
    p = _p(rate=3)

    async def burst() -> list[bool]:
        out = []
        for _ in range(5):
            try:
                await q.admit(p, generates=False)
                out.append(True)
            except QuotaExceeded as e:
                assert e.retry_after() == 1 and "3 requests per second" in str(e)
                out.append(False)
        return out

    assert asyncio.run(burst()) == [True, True, True, False, False]
    other = _p("k2", rate=3)  # another key has its own window
    asyncio.run(q.admit(other, generates=False))
    time.sleep(1.05)
    asyncio.run(q.admit(p, generates=False))  # the window moved on


def test_generated_tokens_per_minute() -> None:
    book = QuotaBook()
    q = Quotas(None, book=book)
    p = _p(tokens=100)
    asyncio.run(q.admit(p, generates=True))
    q.charge(p, 60)
    asyncio.run(q.admit(p, generates=True))  # 40 left
    q.charge(p, 500)  # more than is left: the minute is used up
    with pytest.raises(QuotaExceeded, match="100 generated tokens per minute") as e:
        asyncio.run(q.admit(p, generates=True))
    assert 1 <= e.value.retry_after() <= 60
    asyncio.run(q.admit(p, generates=False))  # searches do not spend tokens


def test_keys_without_limits_are_never_counted() -> None:
    class Boom(QuotaBook):
        def admit(self, *a):  # type: ignore[override]
            raise AssertionError("asked")

    q = Quotas(None, book=Boom())
    asyncio.run(q.admit(_p(), generates=True))
    asyncio.run(q.admit(Principal(None, "anonymous", None, "admin"), generates=False))
