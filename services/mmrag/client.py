"""A small HTTP client for a running mmrag server (``mmrag ask``, the demo)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from mmrag.sse import iter_events


class ServerError(RuntimeError):
    """The server answered with an error (its JSON message), or could not be reached."""

    def __init__(self, status: int | None, message: str) -> None:
        where = f"HTTP {status}" if status else "no answer"
        super().__init__(f"{where}: {message}")
        self.status, self.message = status, message


def _error_message(body: bytes | str) -> str:
    try:
        data = json.loads(body)
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return text[:500] or "(empty response)"


def ask(
    url: str,
    query: str,
    *,
    k: int | None = None,
    collection: str | None = None,
    mode: str | None = None,
    max_tokens: int | None = None,
    stream: bool = True,
    on_token: Callable[[str], None] | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """POST /v1/answer; returns ``{answer, citations, finish_reason, usage, timings}``.

    With ``stream`` the answer is read as server-sent events and ``on_token`` gets each piece as it arrives.
    Raises :class:`ServerError` with the server's message on an error response or an ``error`` event.
    """
    import httpx

    body = {"query": query, "k": k, "collection": collection, "mode": mode, "max_tokens": max_tokens}
    body = {key: v for key, v in body.items() if v is not None}
    endpoint = url.rstrip("/") + "/v1/answer"
    try:
        if not stream:
            r = httpx.post(endpoint, json=body, timeout=timeout_s)
            if r.status_code != 200:
                raise ServerError(r.status_code, _error_message(r.content))
            return r.json()
        out: dict[str, Any] = {"answer": "", "citations": []}
        parts: list[str] = []
        with httpx.stream("POST", endpoint, json={**body, "stream": True}, timeout=timeout_s) as r:
            if r.status_code != 200:
                raise ServerError(r.status_code, _error_message(r.read()))
            for ev in iter_events(r.iter_lines()):
                data = ev.json()
                if ev.event == "token":
                    parts.append(data["text"])
                    if on_token is not None:
                        on_token(data["text"])
                elif ev.event == "citations":
                    out["citations"] = data["citations"]
                elif ev.event == "done":
                    out.update(data)
                elif ev.event == "error":
                    raise ServerError(200, str(data.get("error", {}).get("message", data)))
        out["answer"] = "".join(parts)
        return out
    except httpx.HTTPError as e:
        raise ServerError(None, f"{endpoint}: {e}") from e


def summarize(
    url: str,
    doc_id: str,
    *,
    stream: bool = True,
    refresh: bool = False,
    key: str | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """POST /v1/videos/{doc_id}/summary; returns the summary (``summary``, ``chapters``, ``cached``, ``timings``...).

    With ``stream`` the events are read as they come and ``on_event(name, data)`` gets each (``chapter``, ``token``).
    Raises :class:`ServerError` with the server's message on an error response or an ``error`` event.
    """
    import httpx

    endpoint = url.rstrip("/") + f"/v1/videos/{doc_id}/summary"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"stream": stream, "refresh": refresh}
    try:
        if not stream:
            r = httpx.post(endpoint, json=body, headers=headers, timeout=timeout_s)
            if r.status_code != 200:
                raise ServerError(r.status_code, _error_message(r.content))
            return r.json()  # type: ignore[no-any-return]
        out: dict[str, Any] = {}
        with httpx.stream("POST", endpoint, json=body, headers=headers, timeout=timeout_s) as r:
            if r.status_code != 200:
                raise ServerError(r.status_code, _error_message(r.read()))
            for ev in iter_events(r.iter_lines()):
                data = ev.json()
                if ev.event == "error":
                    raise ServerError(200, str(data.get("error", {}).get("message", data)))
                if ev.event == "done":
                    out = data
                elif on_event is not None and ev.event is not None:
                    on_event(ev.event, data)
        if not out:
            raise ServerError(200, "the stream ended without a summary")
        return out
    except httpx.HTTPError as e:
        raise ServerError(None, f"{endpoint}: {e}") from e


def clock(seconds: float) -> str:
    """``1:05`` / ``1:02:03``: a time in a video, to the second."""
    total = int(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def describe_chapter(ch: dict[str, Any]) -> str:
    """``[0:10-0:20] summary (clips 2-3)``."""
    ns = [c["n"] for c in ch.get("citations") or []]
    clips = "" if not ns else f" (clip {ns[0]})" if len(ns) == 1 else f" (clips {ns[0]}-{ns[-1]})"
    return f"[{clock(ch['start_s'])}-{clock(ch['end_s'])}] {ch['summary']}{clips}"


def describe_citation(c: dict[str, Any]) -> str:
    """``[2] gnuplot.pdf, page 14`` / ``[3] cup.mp4, 0.0-8.1 s``, marked when the answer cites it."""
    name = PurePosixPath(str(c.get("source", ""))).name or c.get("source", "?")
    if c.get("modality") == "page" and c.get("page") is not None:
        where = f", page {c['page']}"
    elif c.get("modality") == "clip" and c.get("start_s") is not None:
        where = f", {c['start_s']:.1f}-{c['end_s']:.1f} s"
    else:
        where = ""
    mark = "  <- cited" if c.get("cited") else ""
    return f"[{c['n']}] {name}{where} ({c['modality']}, score {c['score']:.3f}){mark}"
