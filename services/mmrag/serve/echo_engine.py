"""The echo engine: a deterministic debug engine for Ray Serve LLM's ``LLMServer``, for fast API tests.

``generator.engine: echo`` binds the generator deployment (:func:`mmrag.serve.generator.build_generator`) with
:class:`EchoEngine` in place of vLLM: the same deployment, handle methods and streaming batcher run, and only the
engine answers instantly. Ray Serve LLM's request and response classes are imported where they are needed
(importing them loads vLLM's protocol).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any


class EchoEngine:
    """A deterministic debug engine for ``LLMServer``: answers instantly with text derived from the prompt.

    It honours the engine protocol ``LLMServer`` drives (``ray.llm``'s ``LLMEngine``: ``start``, ``chat``,
    ``check_health``...) and yields the same types as the vLLM engine, so the deployment, its handle methods, the
    streaming batcher and :func:`~mmrag.serve.generator_client.generate` are exercised exactly as in production.
    It is duck-typed rather than a subclass so that importing this module does not import Ray Serve LLM.

    The answer is ``echo: <n> image(s). <first words of the last user message>``, cut to ``max_tokens`` words;
    one word is one token. It checks what vLLM checks first: the model name, and the image limit.
    """

    ANSWER_WORDS = 24

    def __init__(self, llm_config: Any) -> None:
        self.llm_config = llm_config
        self.model_id: str = llm_config.model_id
        limit = (llm_config.engine_kwargs.get("limit_mm_per_prompt") or {}).get("image")
        self.max_images: int | None = limit.get("count") if isinstance(limit, dict) else limit

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def reset_prefix_cache(self) -> None:
        return None

    def routing_stats(self) -> dict[str, Any]:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        raise ValueError("the echo engine has no LoRA adapters")

    @staticmethod
    def _error(message: str, status: int = 400, kind: str = "BadRequestError") -> Any:
        from ray.serve.llm.openai_api_models import ErrorResponse

        return ErrorResponse.model_validate({"error": {"message": message, "type": kind, "code": status}})

    @staticmethod
    def read_messages(messages: Sequence[Any]) -> tuple[int, int, str]:
        """(images, prompt words, text of the last user message) of OpenAI chat ``messages``."""
        n_images, prompt_words, last_user = 0, 0, ""
        for msg in messages:
            msg = msg if isinstance(msg, dict) else msg.model_dump()
            content = msg.get("content")
            texts: list[str] = []
            if isinstance(content, str):
                texts.append(content)
            elif content is not None:
                for part in content:
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind in ("image_url", "image", "image_pil", "image_embeds"):
                        n_images += 1
                    elif kind == "text":
                        texts.append(str(part.get("text") or ""))
            text = " ".join(texts)
            prompt_words += len(text.split())
            if msg.get("role") == "user":
                last_user = text
        return n_images, prompt_words, last_user

    @classmethod
    def answer(cls, n_images: int, last_user: str, max_tokens: int) -> tuple[list[str], str]:
        """(answer tokens, finish reason): the deterministic echo."""
        tokens = ["echo:", f"{n_images}", "image(s).", *last_user.split()[: cls.ANSWER_WORDS]]
        return tokens[:max_tokens], "length" if len(tokens) > max_tokens else "stop"

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        """Like vLLM's: one ``ChatCompletionResponse``, or SSE strings when ``request.stream``; errors as
        ``ErrorResponse``."""
        from ray.serve.llm.openai_api_models import ChatCompletionResponse, ChatCompletionStreamResponse

        if request.model and request.model != self.model_id:
            yield self._error(f"The model `{request.model}` does not exist.", 404, "NotFoundError")
            return
        n_images, prompt_words, last_user = self.read_messages(list(request.messages))
        if self.max_images is not None and n_images > self.max_images:
            yield self._error(
                f"At most {self.max_images} image(s) may be provided in one prompt; {n_images} were given."
            )
            return
        max_tokens = request.max_completion_tokens or request.max_tokens or 16
        tokens, finish = self.answer(n_images, last_user, max_tokens)
        prompt_tokens = prompt_words + n_images
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        rid, created = f"chatcmpl-{request.request_id}", int(time.time())
        if not request.stream:
            yield ChatCompletionResponse.model_validate(
                {
                    "id": rid,
                    "created": created,
                    "model": self.model_id,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(tokens)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, with_usage: bool = False) -> str:
            body: dict[str, Any] = {"id": rid, "created": created, "model": self.model_id}
            body["choices"] = [] if with_usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            if with_usage:
                body["usage"] = usage
            obj = ChatCompletionStreamResponse.model_validate(body)
            return f"data: {obj.model_dump_json(exclude_unset=True)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for i, tok in enumerate(tokens):
            yield chunk({"content": tok if i == 0 else f" {tok}"})
        yield chunk({"content": ""}, finish)
        if request.stream_options is not None and request.stream_options.include_usage:
            yield chunk({}, with_usage=True)
        yield "data: [DONE]\n\n"

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncIterator[Any]:
        yield self._error("the echo engine serves chat only; use /v1/chat/completions")


__all__ = ["EchoEngine"]
