"""Percentiles, SLOs and goodput over per-request records (plain dicts, as written to ``records.jsonl``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)

#: SLO keys accepted by ``--slo`` and what each bounds (all in milliseconds).
SLO_KEYS: dict[str, str] = {
    "latency_ms": "end-to-end request latency",
    "ttft_ms": "time to first token (streaming endpoints)",
    "itl_ms": "the request's mean inter-token latency (streaming endpoints)",
}
STREAM_ONLY_SLOS = frozenset({"ttft_ms", "itl_ms"})


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft_ms=500,latency_ms=2000"`` -> ``{"ttft_ms": 500.0, "latency_ms": 2000.0}``."""
    slo: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SLO_KEYS:
            raise ValueError(f"bad SLO {part.strip()!r}: write KEY=MILLISECONDS with KEY one of {', '.join(SLO_KEYS)}")
        try:
            slo[key] = float(value)
        except ValueError as e:
            raise ValueError(f"bad SLO {part.strip()!r}: {value!r} is not a number of milliseconds") from e
        if not slo[key] > 0:
            raise ValueError(f"bad SLO {part.strip()!r}: the bound must be positive")
    return slo


def distribution(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """count, mean, p50/p90/p99, min and max of the non-missing values (``None`` when there are none)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    if arr.size == 0:
        out.update({"mean": None, **{f"p{p}": None for p in PERCENTILES}, "min": None, "max": None})
        return out
    pct = np.percentile(arr, PERCENTILES)
    out["mean"] = _r(arr.mean())
    out.update({f"p{p}": _r(v) for p, v in zip(PERCENTILES, pct, strict=True)})
    out["min"] = _r(arr.min())
    out["max"] = _r(arr.max())
    return out


def _r(x: float) -> float:
    return round(float(x), 3)


def ok(rec: Mapping[str, Any]) -> bool:
    """A request succeeded: HTTP 200 and no error while reading the response."""
    return rec.get("status") == 200 and not rec.get("error")


def mean_itl(rec: Mapping[str, Any]) -> float | None:
    itl = rec.get("itl_ms") or []
    return sum(itl) / len(itl) if itl else None


def meets_slo(rec: Mapping[str, Any], slo: Mapping[str, float]) -> bool:
    """Whether a request counts toward goodput: it succeeded and every SLO bound holds.

    A request with a single token has no inter-token latency, so an ``itl_ms`` bound holds for it trivially.
    """
    if not ok(rec):
        return False
    for key, bound in slo.items():
        value = mean_itl(rec) if key == "itl_ms" else rec.get(key)
        if key == "itl_ms" and value is None:
            continue
        if value is None or value > bound:
            return False
    return True


def error_key(rec: Mapping[str, Any]) -> str | None:
    """How a failed request is counted in ``errors_by_status``: the HTTP status, else the client-side error kind."""
    if ok(rec):
        return None
    status = rec.get("status")
    if status is not None and status != 200:
        return str(status)
    kind = str(rec.get("error") or "unknown").split(":", 1)[0]
    return f"{status}:{kind}" if status is not None else kind


def summarize(
    records: Sequence[Mapping[str, Any]],
    *,
    window_s: float,
    slo: Mapping[str, float] | None = None,
    dropped: int = 0,
) -> dict[str, Any]:
    """Summary of one run's measured (non-warm-up) records over a measurement window of ``window_s`` seconds."""
    slo = dict(slo or {})
    n = len(records)
    good = [r for r in records if ok(r)]
    n_slo = sum(1 for r in records if meets_slo(r, slo))
    errors = Counter(k for r in records if (k := error_key(r)) is not None)
    tokens = [r["tokens"] for r in good if r.get("tokens") is not None]
    itl_all = [gap for r in good for gap in (r.get("itl_ms") or [])]
    decode_rates = [
        (r["tokens"] - 1) / ((r["latency_ms"] - r["ttft_ms"]) / 1e3)
        for r in good
        if r.get("tokens") and r["tokens"] > 1 and r.get("ttft_ms") is not None and r["latency_ms"] > r["ttft_ms"]
    ]
    w = max(window_s, 1e-9)
    summary: dict[str, Any] = {
        "requests": n,
        "ok": len(good),
        "errors": n - len(good),
        "errors_by_status": dict(sorted(errors.items())),
        "dropped_over_cap": dropped,
        "window_s": round(window_s, 3),
        "throughput_rps": round(n / w, 3),
        "success_rps": round(len(good) / w, 3),
        "goodput_rps": round(n_slo / w, 3),
        # of all offered requests: an arrival dropped over the in-flight cap was not served well either
        "goodput_fraction": round(n_slo / (n + dropped), 4) if n + dropped else None,
        "slo": slo,
        "latency_ms": distribution(r["latency_ms"] for r in good),
        "latency_all_ms": distribution(r["latency_ms"] for r in records if r.get("latency_ms") is not None),
        "ttft_ms": distribution(r.get("ttft_ms") for r in good),
        "itl_ms": distribution(itl_all),
        "tokens": {
            "total": int(sum(tokens)),
            "per_request": distribution(tokens),
            "from_usage": sum(1 for r in good if r.get("tokens_source") == "usage"),
        },
        "output_tokens_per_s": round(sum(tokens) / w, 3) if tokens else None,
        "per_request_tokens_per_s": distribution(decode_rates),
        "schedule_lag_ms": distribution(r.get("lag_ms") for r in records),
    }
    return summary
