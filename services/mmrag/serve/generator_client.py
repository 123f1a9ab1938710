"""The generator's client: OpenAI-style chat requests through a handle to the generator deployment.

:func:`generate` sends a chat request to the deployment (:mod:`mmrag.serve.generator`) and returns the whole
answer (:class:`Generation`) or a stream of text deltas (:class:`GenerationStream`).

The handle protocol is ``LLMServer.chat(request: ChatCompletionRequest, raw_request_info=None)``: an async
generator, so it must be called with ``handle.options(stream=True)``. Without ``request.stream`` it yields one
``ChatCompletionResponse`` (or ``ErrorResponse``); with it, it yields *lists* of OpenAI SSE strings
(``'data: {json}\\n\\n'``, batched every ~50 ms, ending with ``'data: [DONE]\\n\\n'``), and an error as
``[ErrorResponse]``. The request and response classes are vLLM's (re-exported by ``ray.serve.llm``): importing
them loads vLLM, so this module imports them only where they are needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from mmrag.sse import parse_events

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle


class GeneratorError(RuntimeError):
    """The generator refused or failed a request (OpenAI-style error: HTTP status, type, message)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"generator error {status} ({kind}): {message}")
        self.status, self.kind, self.message = status, kind, message


@dataclass
class Usage:
    """Token counts as the engine reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_any(cls, u: Any) -> Usage:
        d = u if isinstance(u, dict) else u.model_dump()
        return cls(
            prompt_tokens=int(d.get("prompt_tokens") or 0),
            completion_tokens=int(d.get("completion_tokens") or 0),
            total_tokens=int(d.get("total_tokens") or 0),
        )


@dataclass
class Generation:
    """A whole answer."""

    text: str
    finish_reason: str | None
    usage: Usage = field(default_factory=Usage)


def _raise_if_error(item: Any) -> None:
    err = getattr(item, "error", None)
    if err is not None and hasattr(item, "model_dump"):
        raise GeneratorError(int(getattr(err, "code", 500) or 500), str(getattr(err, "type", "")), str(err.message))


class GenerationStream:
    """The text deltas of a streamed answer: ``async for delta in stream``.

    ``finish_reason`` and ``usage`` are set once the stream is exhausted. ``cancel()`` stops the request on the
    generator (call it when the client goes away).
    """

    def __init__(self, responses: Any, first: Any) -> None:
        self._responses = responses
        self._first = first
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self._agen = self._deltas()

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        return await self._agen.__anext__()

    def cancel(self) -> None:
        self._responses.cancel()

    async def _items(self) -> AsyncIterator[Any]:
        yield self._first
        async for item in self._responses:
            yield item

    async def _deltas(self) -> AsyncIterator[str]:
        try:
            async for text in self._parse():
                yield text
        except BaseException:
            self._responses.cancel()
            raise

    async def _parse(self) -> AsyncIterator[str]:
        async for batch in self._items():
            for item in batch if isinstance(batch, list) else [batch]:
                _raise_if_error(item)
                if not isinstance(item, str):
                    raise GeneratorError(500, "InternalError", f"unexpected stream item {type(item).__name__}")
                for ev in parse_events(item):
                    if ev.done or not ev.data.strip():  # [DONE]: the source ends right after it
                        continue
                    event = ev.json()
                    if "error" in event:
                        e = event["error"] if isinstance(event["error"], dict) else {"message": str(event["error"])}
                        raise GeneratorError(int(e.get("code") or 500), str(e.get("type", "")), str(e.get("message")))
                    if event.get("usage"):
                        self.usage = Usage.from_any(event["usage"])
                    for choice in event.get("choices") or []:
                        if choice.get("finish_reason"):
                            self.finish_reason = choice["finish_reason"]
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text


def chat_request(
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    stream: bool,
    temperature: float = 0.0,
    model: str | None = None,
    extra_body: dict[str, Any] | None = None,
) -> Any:
    """A ``ChatCompletionRequest`` (the type ``LLMServer.chat`` takes). Importing it loads vLLM's protocol."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": stream,
        **(extra_body or {}),
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    request = ChatCompletionRequest.model_validate(body)
    # pydantic can keep message content as a lazy ValidatorIterator, which does not pickle through Ray
    # (Ray's own ingress works around the same bug before calling LLMServer).
    for i, msg in enumerate(request.messages):
        if not isinstance(msg, dict):
            request.messages[i] = msg = msg.model_dump()
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            msg["content"] = list(content)
    return request


@overload
async def generate(
    handle: DeploymentHandle,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    stream: Literal[False],
    temperature: float = ...,
    model: str | None = ...,
    extra_body: dict[str, Any] | None = ...,
) -> Generation: ...


@overload
async def generate(
    handle: DeploymentHandle,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    stream: Literal[True],
    temperature: float = ...,
    model: str | None = ...,
    extra_body: dict[str, Any] | None = ...,
) -> GenerationStream: ...


async def generate(
    handle: DeploymentHandle,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    stream: bool,
    temperature: float = 0.0,
    model: str | None = None,
    extra_body: dict[str, Any] | None = None,
) -> Generation | GenerationStream:
    """Ask the generator deployment behind ``handle`` to answer ``messages`` (OpenAI chat format).

    Returns the whole :class:`Generation`, or with ``stream=True`` a :class:`GenerationStream` of text deltas.
    ``model`` is the served model name (None: the deployment's only model); ``extra_body`` adds request fields
    vLLM understands (``seed``, ``stop``, ``ignore_eos``...). Raises :class:`GeneratorError` when the engine
    answers with an error (for a stream: when the first chunk is one, so nothing has been sent yet).
    """
    request = chat_request(
        messages, max_tokens=max_tokens, stream=stream, temperature=temperature, model=model, extra_body=extra_body
    )
    # LLMServer.chat is a generator for streaming and non-streaming requests alike.
    responses = handle.options(stream=True).chat.remote(request)
    if stream:
        try:
            first = await responses.__anext__()
            for item in first if isinstance(first, list) else [first]:
                _raise_if_error(item)
        except StopAsyncIteration as e:
            raise GeneratorError(500, "InternalError", "the generator closed the stream without a chunk") from e
        except BaseException:
            responses.cancel()
            raise
        return GenerationStream(responses, first)

    result: Generation | None = None
    try:
        async for batch in responses:
            for item in batch if isinstance(batch, list) else [batch]:
                _raise_if_error(item)
                choices = getattr(item, "choices", None)
                if choices is None:
                    raise GeneratorError(500, "InternalError", f"unexpected response {type(item).__name__}")
                choice = choices[0]
                usage = Usage.from_any(item.usage) if getattr(item, "usage", None) is not None else Usage()
                text = choice.message.content or ""
                result = Generation(text=text, finish_reason=choice.finish_reason, usage=usage)
    except BaseException:
        responses.cancel()  # e.g. the caller was cancelled: stop generating for nobody
        raise
    if result is None:
        raise GeneratorError(500, "InternalError", "the generator returned no response")
    return result


__all__ = ["Generation", "GenerationStream", "GeneratorError", "Usage", "chat_request", "generate"]
