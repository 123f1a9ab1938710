"""The gateway's OpenAI-compatible chat route: ``POST /v1/chat/completions``.

The last user message is answered like ``/v1/answer`` (the gateway's ``prepare_answer``, ``_generate`` and
``_finish``), in OpenAI's ``chat.completion`` shapes (:class:`mmrag.serve.answer.ChatShape`). A mixin of the gateway
class, so that the route shares its FastAPI app, principal, quotas, metrics and generator handle.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from mmrag.serve import answer as A
from mmrag.serve.api import GEN_ERRORS, SSE, api
from mmrag.serve.http_layer import ApiError
from mmrag.serve.schemas import ChatRequest, error_json


class ChatRoutes:
    cfg: Any
    metrics: Any
    _counted: Any
    prepare_answer: Any
    _generate: Any
    _finish: Any

    @api.post("/v1/chat/completions", responses={200: SSE, **GEN_ERRORS})
    async def chat_completions(self, req: ChatRequest) -> Any:
        """OpenAI-compatible chat: the last user message is answered from retrieved sources (RAG).

        Responses are OpenAI ``chat.completion`` objects (``chat.completion.chunk`` events when streaming, ending
        with ``data: [DONE]``) with two extra fields: ``citations`` (as in /v1/answer; on the last chunk when
        streaming) and ``timings``. Retrieval options go in the ``mmrag`` field (``extra_body={"mmrag": {...}}``
        in the openai client)."""
        return await self._counted("chat", self._chat(req))

    async def _chat(self, req: ChatRequest) -> Any:
        model = self.cfg.models.generator.served_model_name
        if req.model is not None and req.model != model:
            raise ApiError(
                404, "model_not_found", f"the model {req.model!r} does not exist; this server has {model!r}", "model"
            )
        try:
            query = A.chat_question(req.messages)
            image = A.chat_image(req.messages)
            history = A.chat_history(req.messages)
            search_for = A.search_query(req.messages) if image is None or query != A.IMAGE_QUESTION else None
        except ValueError as e:
            raise ApiError(400, "invalid_request", str(e), "messages") from e
        opts = req.mmrag
        prep = await self.prepare_answer(
            query,
            k=opts.k if opts else None,
            collection=opts.collection if opts else None,
            mode=opts.mode if opts else None,
            filters=opts.filters if opts else None,
            rerank=opts.rerank if opts else None,
            max_tokens=req.max_completion_tokens or req.max_tokens,
            history=history,
            search_for=search_for,
            evidence=bool(opts and opts.evidence),
            image=image,
        )
        g = self.cfg.generator
        try:
            extra = A.chat_extras(
                req.model_extra or {}, allow_ignore_eos=g.allow_ignore_eos, max_min_tokens=g.max_min_tokens
            )
        except A.ExtraError as e:
            raise ApiError(400, "invalid_request", str(e), e.field) from e
        for key in ("top_p", "seed", "stop"):
            if (v := getattr(req, key)) is not None:
                extra[key] = v
        temperature = 0.0 if req.temperature is None else req.temperature
        shape = A.ChatShape(model)
        t_gen = time.perf_counter()
        if not req.stream:
            gen = await self._generate(prep, stream=False, temperature=temperature, extra=extra)
            cites, timings = await self._finish("chat", prep, gen.text, gen.usage, t_gen, None)
            return JSONResponse(
                shape.completion(
                    gen.text,
                    gen.finish_reason,
                    vars(gen.usage),
                    {"citations": cites, "timings": timings, "notes": prep["notes"]},
                )
            )
        stream = await self._generate(prep, stream=True, temperature=temperature, extra=extra)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        async def chunks() -> AsyncIterator[str]:
            parts: list[str] = []
            t_first: float | None = None
            done = failed = False
            try:
                yield shape.chunk({"role": "assistant", "content": ""})
                async for delta in stream:
                    if t_first is None:
                        t_first = time.perf_counter()
                    parts.append(delta)
                    yield shape.chunk({"content": delta})
                cites, timings = await self._finish("chat", prep, "".join(parts), stream.usage, t_gen, t_first)
                finish = stream.finish_reason or "stop"
                yield shape.chunk({}, finish, extra={"citations": cites, "timings": timings, "notes": prep["notes"]})
                if include_usage:
                    yield shape.chunk(None, usage=vars(stream.usage) if stream.usage else {})
                done = True
                self.metrics.request("chat", 200)
            except Exception as e:
                from mmrag.serve.generator_client import GeneratorError

                failed = True
                self.metrics.request("chat", 502)
                msg = e.message if isinstance(e, GeneratorError) else "the answer failed while streaming"
                yield A.sse(error_json("generator_error", msg))
            finally:
                if not done:
                    stream.cancel()
                    if prep["evidence"] is not None:
                        prep["evidence"].cancel()
                    if not failed:  # the client left mid-stream
                        self.metrics.request("chat", 499)
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
