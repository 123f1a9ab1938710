"""Reading server-sent events: the one parser behind every SSE stream mmrag reads.

The framing is the WHATWG one (https://html.spec.whatwg.org/multipage/server-sent-events.html): ``data:`` lines
accumulate and a blank line dispatches them as one event, named by the last ``event:`` line (``None`` when
unnamed); ``id:``, ``retry:`` and comments (``:``) carry nothing mmrag uses. Its readers: the generator client
(:mod:`mmrag.serve.generator_client`, the engine's OpenAI chunks), the CLI client (:mod:`mmrag.client`), the load
harness (:mod:`mmrag.bench.workloads`) and ``benchmarks/answer.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: The data of the event that ends an OpenAI stream.
DONE = "[DONE]"


@dataclass(frozen=True)
class Event:
    """One dispatched event: its ``data`` lines joined by newlines, and its ``event`` name (None: unnamed)."""

    data: str
    event: str | None = None

    @property
    def done(self) -> bool:
        """Whether this is OpenAI's end-of-stream marker (``data: [DONE]``)."""
        return self.data.strip() == DONE

    def json(self) -> Any:
        """The data parsed as JSON (raises ``json.JSONDecodeError`` when it is not)."""
        return json.loads(self.data)


class SSEDecoder:
    """An incremental decoder: :meth:`feed` it each line as it arrives, :meth:`finish` it when the stream ends."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, line: str) -> Event | None:
        """Take one line (its line break optional); the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            self._event = line[6:].strip()
        return None

    def finish(self) -> Event | None:
        """The stream closed: a last event that had no blank line after it, if any."""
        return self._dispatch()

    def _dispatch(self) -> Event | None:
        data, event = self._data, self._event
        self._data, self._event = [], None
        return Event("\n".join(data), event) if data else None


def iter_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream given line by line (e.g. ``httpx.Response.iter_lines()``), including a last one
    not followed by a blank line."""
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
    last = decoder.finish()
    if last is not None:
        yield last


def parse_events(text: str) -> list[Event]:
    """The events in a chunk of SSE text (e.g. one packet ``'data: {json}\\n\\n'`` of an engine's stream)."""
    return list(iter_events(text.splitlines()))


__all__ = ["DONE", "Event", "SSEDecoder", "iter_events", "parse_events"]
