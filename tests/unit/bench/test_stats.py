"""Percentiles, SLO parsing and goodput on hand-made records."""

from __future__ import annotations

import pytest

from mmrag.bench.stats import distribution, parse_slo, summarize

pytestmark = pytest.mark.unit


def _rec(latency: float, ttft: float | None = None, itl: list[float] | None = None, status: int = 200, **kw):
    return {"status": status, "error": kw.get("error"), "latency_ms": latency, "ttft_ms": ttft, "itl_ms": itl or [],
            "tokens": kw.get("tokens"), "lag_ms": None}  # fmt: skip


def test_distribution_percentiles() -> None:
    d = distribution(range(1, 101))
    assert (
        d["count"] == 100 and d["p50"] == 50.5 and d["p90"] == pytest.approx(90.1) and d["p99"] == pytest.approx(99.01)
    )
    assert d["min"] == 1 and d["max"] == 100 and d["mean"] == 50.5
    assert distribution([None, None])["p50"] is None


def test_parse_slo() -> None:
    assert parse_slo("ttft_ms=500, latency_ms=2000") == {"ttft_ms": 500.0, "latency_ms": 2000.0}
    assert parse_slo(None) == {} and parse_slo("") == {}
    for bad in ("p99=5", "ttft_ms", "ttft_ms=fast", "latency_ms=0"):
        with pytest.raises(ValueError, match="bad SLO"):
            parse_slo(bad)


def test_goodput_counts_only_successes_within_every_slo() -> None:
    records = [
        _rec(100, ttft=10, itl=[5, 5]),  # good
        _rec(300, ttft=10, itl=[5, 5]),  # latency over
        _rec(100, ttft=80, itl=[5, 5]),  # ttft over
        _rec(100, ttft=10, itl=[5, 45]),  # mean itl 25 > 20
        _rec(100, ttft=10),  # one token: no itl, the itl bound holds trivially
        _rec(50, status=500, error="http_500: x"),  # fast but failed
        _rec(60, status=429, error="http_429: x"),
        _rec(70, error="stream_error: boom"),  # HTTP 200 but the stream failed
        {"status": None, "error": "timeout: no complete answer", "latency_ms": 1000, "ttft_ms": None, "itl_ms": []},
    ]
    s = summarize(records, window_s=2.0, slo={"latency_ms": 200, "ttft_ms": 50, "itl_ms": 20})
    assert s["requests"] == 9 and s["ok"] == 5 and s["errors"] == 4
    assert s["errors_by_status"] == {"200:stream_error": 1, "429": 1, "500": 1, "timeout": 1}
    assert s["throughput_rps"] == 4.5 and s["success_rps"] == 2.5
    assert s["goodput_rps"] == 1.0 and s["goodput_fraction"] == pytest.approx(2 / 9, abs=1e-4)
    assert s["latency_ms"]["count"] == 5  # successes only
    no_slo = summarize(records, window_s=2.0)
    assert no_slo["goodput_rps"] == no_slo["success_rps"]


def test_dropped_arrivals_lower_the_goodput_fraction() -> None:
    s = summarize([_rec(10), _rec(10)], window_s=1.0, slo={"latency_ms": 100}, dropped=2)
    assert s["dropped_over_cap"] == 2 and s["goodput_fraction"] == 0.5
