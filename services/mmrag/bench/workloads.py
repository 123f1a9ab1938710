"""What the load harness sends to each endpoint and how it reads the answer.

A :class:`Workload` builds request bodies and a fresh :class:`ResponseParser` per request. Streaming parsers are fed
one line at a time with the time it arrived, so TTFT (time to the first non-empty text delta), the gaps between
deltas (ITL) and the token count come from the wire, not from the server's own accounting. Tokens are
``usage.completion_tokens`` when the server reports it, else the number of text deltas (``tokens_source`` says which).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mmrag.sse import Event, SSEDecoder

Endpoint = Literal["search", "answer", "chat"]
ENDPOINTS: tuple[str, ...] = ("search", "answer", "chat")

#: Used when no ``--queries`` file is given: short questions about the bundled sample corpus.
DEFAULT_QUERIES: tuple[str, ...] = (
    "permutation test",
    "conditional inference",
    "table of p-values",
    "a cup on a table",
    "asymptotic distribution",
    "independence of two variables",
    "figure with a histogram",
    "survival analysis",
    "what does the coin package compute?",
    "which test statistics are shown in the tables?",
)


def load_queries(path: str | Path | None) -> list[dict[str, Any]]:
    """Queries as dicts with at least ``query``.

    A file holds one query per line, or JSON objects one per line (JSONL) with a ``query`` field; a JSONL line's
    other fields (``k``, ``collection``, ``mode``, ``filters``, ``max_tokens``, ...) go into that request's body.
    Blank lines and lines starting with ``#`` are skipped.
    """
    if path is None:
        return [{"query": q} for q in DEFAULT_QUERIES]
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"queries file {p} does not exist: give a text file (one query per line) or JSONL")
    out: list[dict[str, Any]] = []
    for n, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{n}: not valid JSON ({e.msg}); a JSONL line needs a 'query' field") from e
            if not isinstance(obj.get("query"), str) or not obj["query"]:
                raise ValueError(f"{p}:{n}: a JSONL line needs a non-empty string 'query' field")
            out.append(obj)
        else:
            out.append({"query": line})
    if not out:
        raise ValueError(f"queries file {p} holds no query")
    return out


def merge_body(body: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``body`` updated with ``extra``; a ``None`` in ``extra`` removes that key."""
    for key, value in (extra or {}).items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


# ------------------------------------------------------------------------------------------------ parsers
class ResponseParser:
    """Reads one response: :meth:`feed` for each line of a stream, or :meth:`whole` for a complete body."""

    def __init__(self) -> None:
        self.token_times: list[float] = []
        self.usage_tokens: int | None = None
        self.error: str | None = None
        self.done = False
        self.n_results: int | None = None
        self._sse = SSEDecoder()

    # SSE framing (mmrag.sse): data lines accumulate until a blank line dispatches the event.
    def feed(self, line: str, now: float) -> None:
        event = self._sse.feed(line)
        if event is not None:
            self._dispatch(event, now)

    def finish(self, now: float) -> None:
        """The stream closed: dispatch a last event that had no blank line after it."""
        event = self._sse.finish()
        if event is not None:
            self._dispatch(event, now)

    def _dispatch(self, event: Event, now: float) -> None:
        if event.done:
            self.done = True
            return
        try:
            obj: Any = event.json()
        except json.JSONDecodeError:
            obj = None
        self.on_event(event.event, obj, event.data, now)

    def on_event(self, event: str | None, obj: Any, raw: str, now: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def whole(self, body: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # helpers shared by the OpenAI-shaped parsers
    def _usage(self, obj: Mapping[str, Any]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, Mapping) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]

    def _error(self, obj: Any) -> bool:
        if isinstance(obj, Mapping) and obj.get("error"):
            err = obj["error"]
            msg = err.get("message") if isinstance(err, Mapping) else err
            self.error = f"stream_error: {msg}"
            return True
        return False

    def _openai_chunk(self, obj: Mapping[str, Any], now: float) -> None:
        self._usage(obj)
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.token_times.append(now)

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.error = "bad_response: body is not JSON"
            return None


class ChatParser(ResponseParser):
    """OpenAI chat completions: ``data: {chunk}`` lines, ``data: [DONE]``; usage in the last chunk when asked for."""

    def on_event(self, event: str | None, obj: Any, raw: str, now: float) -> None:
        if not isinstance(obj, Mapping):
            self.error = f"bad_response: chunk is not JSON: {raw[:80]!r}"
        elif not self._error(obj):
            self._openai_chunk(obj, now)

    def whole(self, body: bytes) -> None:
        obj = self._json(body)
        if isinstance(obj, Mapping) and not self._error(obj):
            self._usage(obj)
            if not obj.get("choices"):
                self.error = "bad_response: no choices"


_TEXT_FIELDS = ("delta", "text", "token", "content")
_END_EVENTS = frozenset({"done", "end", "final", "complete"})


class AnswerParser(ResponseParser):
    """``/v1/answer`` server-sent events: mmrag sends ``event: token`` ``{"text"}``, ``event: citations``,
    ``event: done`` ``{"finish_reason", "usage", "timings"}`` and, on failure, ``event: error``.

    Lenient on purpose, so the harness also reads the other usual shapes of such streams: OpenAI
    chunks; JSON events whose ``delta``/``text``/``token``/``content`` is the text (other events, such as citations,
    are not tokens); plain-text ``data:`` lines under no event name or ``token``/``delta``/``message``; an
    ``error`` event or field; ``[DONE]`` or an ``event: done`` (its ``usage`` counted) at the end.
    """

    def on_event(self, event: str | None, obj: Any, raw: str, now: float) -> None:
        if self._error(obj) or event == "error":
            if not self.error:
                self.error = f"stream_error: {raw[:200]}"
            return
        if isinstance(obj, Mapping):
            if "choices" in obj:
                self._openai_chunk(obj, now)
                return
            self._usage(obj)
            if isinstance(obj.get("completion_tokens"), int):
                self.usage_tokens = obj["completion_tokens"]
            if event in _END_EVENTS or obj.get("type") in _END_EVENTS:
                self.done = True
                return
            for key in _TEXT_FIELDS:
                if isinstance(obj.get(key), str):
                    if obj[key]:
                        self.token_times.append(now)
                    return
        elif event in (None, "token", "delta", "message") and raw:
            self.token_times.append(now)
        elif event in _END_EVENTS:
            self.done = True

    def whole(self, body: bytes) -> None:
        obj = self._json(body)
        if isinstance(obj, Mapping) and not self._error(obj):
            self._usage(obj)


class SearchParser(ResponseParser):
    """``/v1/search``: one JSON body with ``results``."""

    def on_event(self, event: str | None, obj: Any, raw: str, now: float) -> None:  # pragma: no cover - not streamed
        raise RuntimeError("/v1/search does not stream")

    def whole(self, body: bytes) -> None:
        obj = self._json(body)
        if isinstance(obj, Mapping) and not self._error(obj):
            results = obj.get("results")
            if isinstance(results, list):
                self.n_results = len(results)
            else:
                self.error = "bad_response: no results list"


# ---------------------------------------------------------------------------------------------- workloads
class Workload:
    """One endpoint: its path, whether it streams, a body per query, a parser per request."""

    name: str = ""
    path: str = ""
    parser_cls: type[ResponseParser] = ResponseParser
    can_stream = False

    def __init__(
        self,
        *,
        stream: bool = True,
        k: int | None = None,
        collection: str | None = None,
        mode: str | None = None,
        model: str = "mmrag",
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.stream = stream and self.can_stream
        self.k = k
        self.collection = collection
        self.mode = mode
        self.model = model
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})

    def base_body(self, query: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def body(self, q: Mapping[str, Any]) -> dict[str, Any]:
        body = self.base_body(q["query"])
        body.update({k: v for k, v in q.items() if k != "query"})
        return merge_body(body, self.extra_body)

    def bodies(self, queries: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """Every query's body, serialised once up front so the hot loop does no JSON encoding."""
        return [json.dumps(self.body(q)).encode() for q in queries]

    def parser(self) -> ResponseParser:
        return self.parser_cls()

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "path": self.path, "stream": self.stream}


def _some(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


class SearchWorkload(Workload):
    name, path, parser_cls = "search", "/v1/search", SearchParser

    def base_body(self, query: str) -> dict[str, Any]:
        return _some(query=query, k=self.k, collection=self.collection, mode=self.mode)


class AnswerWorkload(Workload):
    name, path, parser_cls, can_stream = "answer", "/v1/answer", AnswerParser, True

    def base_body(self, query: str) -> dict[str, Any]:
        return _some(
            query=query,
            k=self.k,
            collection=self.collection,
            mode=self.mode,
            stream=self.stream,
            max_tokens=self.max_tokens,
        )


class ChatWorkload(Workload):
    name, path, parser_cls, can_stream = "chat", "/v1/chat/completions", ChatParser, True

    def base_body(self, query: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": query}],
            "stream": self.stream,
        }
        if self.stream:
            # Standard OpenAI: the last chunk then carries usage.completion_tokens, the true token count.
            body["stream_options"] = {"include_usage": True}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        # mmrag's retrieval options ride in an extra "mmrag" field of the OpenAI request
        retrieval = _some(k=self.k, collection=self.collection, mode=self.mode)
        if retrieval:
            body["mmrag"] = retrieval
        return body

    def body(self, q: Mapping[str, Any]) -> dict[str, Any]:
        body = self.base_body(q["query"])
        retrieval = {k: q[k] for k in ("k", "collection", "mode", "filters") if k in q}
        if retrieval:
            body["mmrag"] = {**body.get("mmrag", {}), **retrieval}
        body.update({k: v for k, v in q.items() if k not in ("query", "k", "collection", "mode", "filters")})
        return merge_body(body, self.extra_body)


WORKLOADS: dict[str, type[Workload]] = {"search": SearchWorkload, "answer": AnswerWorkload, "chat": ChatWorkload}


def make_workload(endpoint: str, **kw: Any) -> Workload:
    try:
        cls = WORKLOADS[endpoint]
    except KeyError:
        raise ValueError(f"unknown endpoint {endpoint!r}: use one of {', '.join(ENDPOINTS)}") from None
    return cls(**kw)
