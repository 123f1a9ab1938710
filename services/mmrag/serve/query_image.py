"""An image carried by a question (``/v1/search``, ``/v1/answer``, chat ``image_url`` parts): checked and decoded.

It comes as base64 or a ``data:image/...;base64,`` URL in JSON, or as a multipart file. Remote URLs are never
fetched (the server would become anyone's HTTP client): they get a 400 that says how to send the image instead.
The bytes go through the same decoder as ingested images (:func:`mmrag.ingest.image.read_image`: the pixel count is
checked from the header before anything is decoded, 16-bit and transparent images come out right, EXIF orientation
is applied), then the image is scaled to what the retriever's encoder takes and sent on as PNG.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import BaseModel

from mmrag.serve.http_layer import ApiError

if TYPE_CHECKING:
    from mmrag.config import MmragConfig

M = TypeVar("M", bound=BaseModel)

#: A URL scheme at the start of the value (http://, https://, ftp://, file:, s3://, ...), data: excepted.
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),", re.S)


def image_bytes(value: str, *, max_bytes: int, field: str = "image") -> bytes:
    """The raw bytes of ``value`` (base64, or a base64 data URL), or an :class:`ApiError` 400/413 saying what is
    wrong with it."""
    v = value.strip()
    if v.startswith("data:"):
        m = _DATA_URL.match(v)
        if m is None:
            raise ApiError(400, "invalid_image", "the data URL has no ',' before its data", field)
        mime = m.group("mime").strip().lower()
        if mime and not mime.startswith("image/"):
            raise ApiError(400, "invalid_image", f"the data URL holds {mime!r}, not an image", field)
        if ";base64" not in m.group("params").lower():
            raise ApiError(400, "invalid_image", "the data URL must be base64 (data:image/png;base64,...)", field)
        v = v[m.end() :]
    elif _SCHEME.match(v):  # base64 has no ':'; this is a URL or a path
        scheme = v.split(":", 1)[0].lower()
        raise ApiError(
            400,
            "remote_image_refused",
            f"{scheme}: image URLs are not fetched by this server; send the image itself, as base64 or a data URL "
            "(data:image/png;base64,...), or as a multipart file",
            field,
        )
    v = re.sub(r"\s+", "", v)
    if not v:
        raise ApiError(400, "invalid_image", "the image is empty", field)
    if len(v) > (max_bytes + 2) // 3 * 4 + 4:
        raise ApiError(
            413, "image_too_large", f"the image is over server.max_query_image_bytes ({max_bytes} bytes)", field
        )
    try:
        raw = base64.b64decode(v + "=" * (-len(v) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, "invalid_image", f"the image is not valid base64 ({e})", field) from e
    return check_size(raw, max_bytes=max_bytes, field=field)


def check_size(raw: bytes, *, max_bytes: int, field: str = "image") -> bytes:
    if not raw:
        raise ApiError(400, "invalid_image", "the image is empty", field)
    if len(raw) > max_bytes:
        raise ApiError(
            413,
            "image_too_large",
            f"the image is {len(raw)} bytes, over server.max_query_image_bytes ({max_bytes})",
            field,
        )
    return raw


def prepare_query_image(raw: bytes, *, max_pixels: int, encoder_pixels: int, field: str = "image") -> bytes:
    """``raw`` decoded (header checked against ``max_pixels`` first), as 8-bit RGB scaled to ``encoder_pixels``,
    PNG-encoded for the retriever; an :class:`ApiError` naming the problem when it is no usable image."""
    from mmrag.config import IngestConfig
    from mmrag.ingest.image import read_image
    from mmrag.ingest.records import DecodeError

    cfg = IngestConfig(max_pixels=max(10_000, encoder_pixels), thumbnail_px=32)
    rec = next(iter(read_image(raw, cfg, source="the image", max_decode_pixels=max_pixels)))
    if isinstance(rec, DecodeError):
        if rec.code == "too_large":
            what = rec.reason.split(", over")[0].split(" (")[0]
            raise ApiError(
                413,
                "image_too_large",
                f"{what}: over server.max_query_image_pixels ({max_pixels} pixels); scale it down",
                field,
            )
        raise ApiError(400, "invalid_image", rec.reason.replace("before ingesting", "first"), field)
    buf = io.BytesIO()
    rec.images[0].save(buf, format="PNG")
    return buf.getvalue()


async def image_query(
    req: Any,
    mode: str,
    weights: dict[str, float] | None,
    calibration: dict[str, Any] | None,
    *,
    cfg: MmragConfig,
    retries: Any,
    retriever: Any,
) -> tuple[np.ndarray, str, list[str]]:
    """The visual channel's query for a request with an image: (multivector, mode, notes for the client).

    The image is checked and scaled here (in a thread), encoded by a retriever replica like an ingested page, and put
    after the query text's tokens when there is text: MaxSim sums over query tokens, so the visual score is the text's
    match plus the image's. An image alone searches the visual channel (mode visual); a text or dense mode without
    text is a 400."""
    import asyncio

    srv = cfg.server
    text = req.query.strip()
    if not text:
        if req.mode not in (None, "visual", "hybrid"):
            raise ApiError(
                400,
                "invalid_request",
                f"mode {req.mode!r} searches text, and this request has only an image: leave mode out (an image "
                "searches the visual channel) or add query text",
                "mode",
            )
        mode = "visual"
    raw = image_bytes(req.image, max_bytes=srv.max_query_image_bytes)
    png = await asyncio.to_thread(
        prepare_query_image,
        raw,
        max_pixels=srv.max_query_image_pixels,
        encoder_pixels=cfg.models.retriever.max_image_pixels,
    )
    img_mv = await retries.call("retriever.encode_image", lambda: retriever.encode_image.remote(png))
    qmv = img_mv
    if text:
        text_mv = await retries.call("retriever.encode", lambda: retriever.encode.remote(req.query))
        qmv = np.concatenate([np.asarray(text_mv, np.float32), np.asarray(img_mv, np.float32)])
    return qmv, mode, _notes(mode, weights, calibration)


INTRO = "The image in the question:"


def generator_image(image: str, cfg: MmragConfig, notes: list[str], count_tokens: Any = None) -> tuple[str, int] | None:
    """The question's image as the generator's prompt takes it, ``(data URL, prompt tokens it adds)``, or None with
    a note: a text-only generator cannot look at it (it still found the sources)."""
    from mmrag.imaging import prepare_image
    from mmrag.serve.generator import is_vision_model
    from mmrag.serve.prompt import PART_SLACK, estimate_prompt_tokens

    m = cfg.models.generator
    if not is_vision_model(cfg):
        notes.append(
            f"the generator ({m.model}) reads text only: it did not see the image, which was used to find the sources"
        )
        return None
    prepared = prepare_image(image_bytes(image, max_bytes=cfg.server.max_query_image_bytes), m.image_max_pixels)
    if prepared is None:  # read_image accepted it for retrieval; the prompt's decoder did not
        notes.append("the image could not be prepared for the generator; it was used to find the sources only")
        return None
    parts = [{"type": "text", "text": INTRO}, {"type": "image_url", "image_url": {"url": prepared[0]}}]
    empty = estimate_prompt_tokens([{"role": "user", "content": []}], count_tokens)
    # + the question's own text turning from a string into a part
    return prepared[0], estimate_prompt_tokens([{"role": "user", "content": parts}], count_tokens) - empty + PART_SLACK


def with_image(messages: list[dict[str, Any]], data_url: str) -> list[dict[str, Any]]:
    """``messages`` with the question's image before the question's words in the last user turn (the prompt was
    built leaving room for it: :func:`generator_image`'s token count)."""
    last = dict(messages[-1])
    content = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
    last["content"] = [
        {"type": "text", "text": INTRO},
        {"type": "image_url", "image_url": {"url": data_url}},
        *content,
    ]
    return [*messages[:-1], last]


def _notes(mode: str, weights: dict[str, float] | None, calibration: dict[str, Any] | None) -> list[str]:
    notes = []
    if mode in ("text", "dense"):
        notes.append(f"mode {mode} does not use the visual channel: the image did not change this ranking")
    elif mode == "hybrid" and weights is not None and weights.get("visual", 0.0) <= 0:
        notes.append(
            "the visual channel, which the image searches, has weight 0 in this hybrid search (the collection's "
            "calibration found its scores no better than chance, or the weights say so): the image did not change "
            "this ranking; use mode visual to rank by the image"
        )
    visual = ((calibration or {}).get("channels") or {}).get("visual") or {}
    if visual.get("above_chance") is False:
        notes.append(
            "this collection's calibration found the visual model's rankings no better than chance (e.g. a tiny "
            "random-weight stand-in): results found by the image are not meaningful"
        )
    return notes


async def parse_body(request: Any, model: type[M]) -> M:
    """The request body as ``model``: JSON, or multipart/form-data with the JSON fields in a part named
    ``request`` (or ``query`` as a plain field) and the image as a file part (or base64 field) named ``image``.
    Invalid input raises FastAPI's RequestValidationError, so the error is the API's usual 400."""
    import json

    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    ctype = request.headers.get("content-type", "")
    try:
        if not ctype.startswith("multipart/form-data"):
            return model.model_validate_json(await request.body())
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as e:  # a malformed multipart body
            raise ApiError(400, "invalid_request", f"the multipart body cannot be read: {e}") from e
        data: Any = {}
        if isinstance(form.get("request"), str):
            try:
                data = json.loads(form["request"])
            except ValueError as e:
                raise ApiError(400, "invalid_json", "the multipart part `request` is not valid JSON", "request") from e
            if not isinstance(data, dict):
                raise ApiError(400, "invalid_request", "the multipart part `request` must be a JSON object", "request")
        if isinstance(form.get("query"), str):
            data["query"] = form["query"]
        image = form.get("image")
        if isinstance(image, str):
            data["image"] = image
        elif image is not None:
            data["image"] = base64.b64encode(await image.read()).decode("ascii")
        unknown = sorted(set(form.keys()) - {"request", "query", "image"})
        if unknown:
            raise ApiError(
                400, "invalid_request", f"unknown multipart part(s) {unknown}: use request, query, image", unknown[0]
            )
        return model.model_validate_json(json.dumps(data))
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False, include_input=False)]
        raise RequestValidationError(errors) from None


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses its body with :func:`parse_body`: JSON or multipart."""
    from mmrag.serve.api import BODY_MODELS

    if model not in BODY_MODELS:
        BODY_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    multipart = {
        "type": "object",
        "properties": {
            "request": {"type": "string", "description": f"The JSON fields of {model.__name__} (optional)."},
            "query": {"type": "string", "description": "The query text (instead of request's)."},
            "image": {"type": "string", "format": "binary", "description": "The image file."},
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref}, "multipart/form-data": {"schema": multipart}},
        }
    }


__all__ = [
    "body_doc",
    "check_size",
    "generator_image",
    "image_bytes",
    "image_query",
    "parse_body",
    "prepare_query_image",
    "with_image",
]
