"""The answer half of the gateway, as plain functions: citations, server-sent events, OpenAI response shapes.

The gateway (:mod:`mmrag.serve.gateway`) runs query → retriever → reranker → prompt → generator and uses these
to turn the ranked items and the generated text into ``/v1/answer`` and ``/v1/chat/completions`` responses.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

_CITE = re.compile(r"\[\s*(\d+(?:\s*(?:[-–,;]|and)\s*\d+)*)\s*\]")
_NUM_OR_RANGE = re.compile(r"(\d+)\s*[-–]\s*(\d+)|(\d+)")


def cited_numbers(text: str, n_sources: int) -> set[int]:
    """The source numbers ``text`` cites as ``[2]``, ``[1, 3]``, ``[1-3]``, within ``1..n_sources``."""
    out: set[int] = set()
    for m in _CITE.finditer(text or ""):
        for a, b, single in _NUM_OR_RANGE.findall(m.group(1)):
            if single:
                lo = hi = int(single)
            else:
                lo, hi = sorted((int(a), int(b)))
                hi = min(hi, lo + n_sources)  # a hostile [1-999999999] costs nothing
            out.update(i for i in range(lo, hi + 1) if 1 <= i <= n_sources)
    return out


def citations(hits: Sequence[dict[str, Any]], n_used: int, answer: str, route_prefix: str) -> list[dict[str, Any]]:
    """The first ``n_used`` hits (those in the prompt) as citations numbered like the prompt, flagged if cited."""
    prefix = route_prefix.rstrip("/")
    cited = cited_numbers(answer, n_used)
    out = []
    for n, h in enumerate(hits[:n_used], start=1):
        out.append(
            {
                "n": n,
                "cited": n in cited,
                "id": h["id"],
                "modality": h["modality"],
                "source": h["source_uri"],
                "page": h.get("page"),
                "start_s": h.get("start_s"),
                "end_s": h.get("end_s"),
                "score": float(h["score"]),
                "snippet": (h.get("text") or "")[:300],
                "image_url": f"{prefix}/v1/items/{h['id']}/image",
                "thumbnail_url": f"{prefix}/v1/items/{h['id']}/thumbnail",
            }
        )
    return out


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event; ``data`` as compact JSON (a string is sent as it is)."""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {body}\n\n"


def message_text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")


#: The question asked for an image that comes without words.
IMAGE_QUESTION = "What does the image show, and what do the sources say about it?"


def chat_question(messages: Sequence[Any]) -> str:
    """The text of the last user message of an OpenAI conversation (:data:`IMAGE_QUESTION` when it is an image
    alone).

    Raises ValueError (with the message a client needs) when there is none, or when a user message carries a part
    other than text and ``image_url`` images (checked by :func:`chat_image`).
    """
    last = None
    for m in messages:
        if m.role == "user":
            last = m
            if isinstance(m.content, list):
                for p in m.content:
                    if isinstance(p, dict) and p.get("type") not in ("text", "image_url", None):
                        raise ValueError(
                            f"messages: content parts of type {p.get('type')!r} are not supported; send text and "
                            "images as image_url parts with data URLs"
                        )
    if last is None:
        raise ValueError("messages: there is no user message to answer")
    text = message_text(last.content)
    if not text.strip():
        if chat_image(messages) is not None:
            return IMAGE_QUESTION
        raise ValueError("messages: the last user message has no text")
    return text


def chat_image(messages: Sequence[Any]) -> str | None:
    """The image the last user message carries (an ``image_url`` part's URL: a data URL, checked by the gateway),
    or None. Images of earlier turns are not searched again; more than one in the last message is an error."""
    last = None
    for m in messages:
        if m.role == "user":
            last = m
    urls: list[str] = []
    for p in (last.content if last is not None and isinstance(last.content, list) else []) or []:
        if isinstance(p, dict) and p.get("type") == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str) or not url:
                raise ValueError("messages: an image_url part needs image_url.url (a data URL)")
            urls.append(url)
    if len(urls) > 1:
        raise ValueError(f"messages: the last user message carries {len(urls)} images; send one")
    return urls[0] if urls else None


#: A follow-up this short ("and on page 5?") is searched together with the question before it.
FOLLOW_UP_WORDS = 8


def chat_history(messages: Sequence[Any]) -> list[dict[str, str]]:
    """The user and assistant turns before the last user message, as ``{"role", "content"}`` text (system and tool
    messages are left out: the system prompt is mmrag's)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    out = []
    for m in messages[:last]:
        if m.role in ("user", "assistant"):
            text = message_text(m.content)
            if text.strip():
                out.append({"role": m.role, "content": text})
    return out


def search_query(messages: Sequence[Any]) -> str:
    """What a chat's retrieval searches for: the last user message, with the one before it when the last is a
    short follow-up whose subject is in the earlier turn."""
    users = [message_text(m.content) for m in messages if m.role == "user"]
    users = [u for u in users if u.strip()]
    if not users:
        raise ValueError("messages: there is no user message to answer")
    last = users[-1]
    if len(users) > 1 and len(last.split()) < FOLLOW_UP_WORDS:
        return f"{users[-2]} {last}"
    return last


class ChatShape:
    """OpenAI ``chat.completion`` / ``chat.completion.chunk`` objects for one response."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def completion(
        self, text: str, finish_reason: str | None, usage: dict[str, int], extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            **self._base("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage,
            **extra,
        }

    def chunk(
        self,
        delta: dict[str, Any] | None,
        finish_reason: str | None = None,
        *,
        usage: dict[str, int] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        body = self._base("chat.completion.chunk")
        body["choices"] = (
            [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        )
        if usage is not None:
            body["usage"] = usage
        body.update(extra or {})
        return sse(body)


#: OpenAI request fields forwarded to vLLM (sampling options load tools send), checked by :func:`chat_extras`.
CHAT_PASSTHROUGH = ("ignore_eos", "min_tokens", "top_k", "repetition_penalty", "presence_penalty", "frequency_penalty")


class ExtraError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def chat_extras(extra: dict[str, object], *, allow_ignore_eos: bool, max_min_tokens: int) -> dict[str, object]:
    """The pass-through sampling fields of a chat request, type-checked and within the deployment's generation
    limits (``generator.allow_ignore_eos``, ``generator.max_min_tokens``): forcing long answers is how a few clients
    hold every engine decoding. Raises :class:`ExtraError` naming the field."""
    out: dict[str, object] = {}
    for key in CHAT_PASSTHROUGH:
        v = extra.get(key)
        if v is None:
            continue
        if key == "ignore_eos":
            if not isinstance(v, bool):
                raise ExtraError(key, "ignore_eos must be true or false")
            if v and not allow_ignore_eos:
                raise ExtraError(key, "ignore_eos is not allowed on this deployment (generator.allow_ignore_eos)")
        elif key in ("min_tokens", "top_k"):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ExtraError(key, f"{key} must be an integer")
            if key == "min_tokens" and not 0 <= v <= max_min_tokens:
                raise ExtraError(
                    key, f"min_tokens must be between 0 and {max_min_tokens} here (generator.max_min_tokens)"
                )
            if key == "top_k" and v < -1:
                raise ExtraError(key, "top_k must be -1 (off) or a positive integer")
        elif not _number(v):
            raise ExtraError(key, f"{key} must be a finite number")
        out[key] = v
    return out
