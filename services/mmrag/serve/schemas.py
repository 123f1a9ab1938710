"""HTTP request/response models of the mmrag API and its JSON error shape.

Errors are always ``{"error": {"code": ..., "message": ..., "field": ...}}`` with a stable ``code``;
they never echo the request body back (a 1 MiB query must not produce a 1 MiB error).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mmrag.config import COLLECTION_PATTERN, Channel, FusionMethod, SearchMode

ModalityName = Literal["page", "image", "clip", "audio"]
#: C0 controls but tab, newline and carriage return; DEL; C1 controls. A NUL in a query is never meant.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def no_controls(v: str) -> str:
    """``v`` unchanged, or a ValueError naming the first control character (U+XXXX) and where it is."""
    m = CONTROL_RE.search(v)
    if m:
        raise ValueError(
            f"contains the control character U+{ord(m.group()):04X} at position {m.start()}; remove it "
            "(tabs and newlines are fine)"
        )
    return v


class _Req(BaseModel):
    """Public request bodies: unknown fields are errors, and nothing is coerced (``"5"`` is not a count,
    ``true`` is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SearchFiltersIn(_Req):
    """Typed filters (same names as :class:`mmrag.store.search.SearchFilters`); each becomes a quoted
    literal in a LanceDB expression, never raw SQL."""

    modalities: list[ModalityName] | None = Field(default=None, description="Only these modalities.")
    source_uris: list[str] | None = Field(
        default=None, max_length=1000, description="Only items from these source URIs (as ingested)."
    )
    doc_ids: list[str] | None = Field(default=None, max_length=1000, description="Only items of these documents.")
    page_min: int | None = Field(default=None, ge=1, description="Pages at or after this number.")
    page_max: int | None = Field(default=None, ge=1, description="Pages at or before this number.")
    time_min_s: float | None = Field(default=None, ge=0, description="Clips ending after this second.")
    time_max_s: float | None = Field(default=None, ge=0, description="Clips starting before this second.")

    @field_validator("source_uris", "doc_ids")
    @classmethod
    def _strings(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for s in v:
                if not s or len(s) > 4096:
                    raise ValueError("each value must be 1-4096 characters")
                no_controls(s)
        return v

    @field_validator("time_min_s", "time_max_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


#: The ``image`` field of /v1/search and /v1/answer (mmrag.serve.query_image); declared before ``query``, whose
#: validator reads it.
QUESTION_IMAGE = (
    "An image to find pages and clips that look like it: base64, or a data URL "
    "(data:image/png;base64,...); a multipart request sends it as the file part `image`. Its late-interaction "
    "multivector is the visual channel's query, alone (then the mode is visual) or with the query text's (the "
    "two are one multivector; the text also feeds BM25 and the dense channel). Remote URLs are refused (the "
    "server fetches nothing); at most server.max_query_image_bytes and server.max_query_image_pixels."
)


class SearchRequest(_Req):
    """POST /v1/search (JSON, or multipart/form-data: the JSON fields in a part named `request`, or `query` as a
    field, and the image as a file part named `image`)."""

    image: str | None = Field(default=None, description=QUESTION_IMAGE)
    query: str = Field(
        default="",
        validate_default=True,
        description="What to look for (natural language); may be empty with an image.",
    )
    k: int = Field(default=10, ge=1, description="How many results to return (at most server.max_k).")
    collection: str | None = Field(
        default=None, pattern=COLLECTION_PATTERN, description="Collection to search (default: the store's default)."
    )
    mode: SearchMode | None = Field(
        default=None, description="visual, text (BM25), dense or hybrid (default: the retriever's)."
    )
    filters: SearchFiltersIn | None = Field(default=None, description="Optional typed filters.")
    rerank: bool | None = Field(
        default=None,
        description="Reranking: null (default) as the collection's calibration decided (skipped when it did not "
        "improve the collection's probe queries); false never; true at the configured or calibrated weight.",
    )
    rerank_weight: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="How much the reranker's order counts against the fused order (1: its order alone); overrides "
        "the configured and calibrated weight.",
    )
    weights: dict[Channel, float] | None = Field(
        default=None,
        description="Hybrid channel weights (visual, bm25, dense; a channel left out gets 0); default: the config's "
        "retriever.fusion_weights, else the collection's calibration.",
    )
    fusion: FusionMethod | None = Field(default=None, description="Hybrid fusion method: rrf or score.")
    evidence: bool = Field(
        default=False,
        description="Also return each result's evidence: regions of the page or clip frames where the query's tokens "
        "matched (boxes in normalised coordinates from the late-interaction model's per-patch MaxSim contributions) "
        "and the query's words in the snippet. Off by default: it costs a store read and some maths per result.",
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        from mmrag.config import check_weights

        return check_weights(v)

    @field_validator("query")
    @classmethod
    def _query(cls, v: str, info: ValidationInfo) -> str:
        if not v.strip() and info.data.get("image") is None:
            raise ValueError("must not be empty (or send an image to search by)")
        return no_controls(v)


class Region(BaseModel):
    """A part of a page or clip frame where the query matched, in normalised coordinates (0..1, origin top left)."""

    x0: float = Field(description="Left edge.")
    y0: float = Field(description="Top edge.")
    x1: float = Field(description="Right edge.")
    y1: float = Field(description="Bottom edge.")
    score: float = Field(description="This region's share of the page's (frame's) per-patch MaxSim contributions.")
    terms: list[str] = Field(
        default_factory=list,
        description="Query tokens (as text, in query order: joined they read as words) whose best patch lies in it.",
    )
    frame: int | None = Field(default=None, description="Clips: the frame (0-based, in time order); pages: null.")
    t_s: float | None = Field(default=None, description="Clips: the frame's time in the video, seconds.")


class Evidence(BaseModel):
    """Why an item matched (asked for with ``evidence: true``)."""

    method: Literal["maxsim", "text"] = Field(
        description="maxsim: regions from the visual model's token matches; text: only the snippet's words."
    )
    regions: list[Region] = Field(default_factory=list, description="Best first, at most a few per page or frame.")
    grid: list[int] | None = Field(default=None, description="[rows, cols] of the image's patch tokens.")
    patch_share: float | None = Field(
        default=None, description="Share of the score's positive part that image patches carry (not prompt tokens)."
    )
    highlights: list[list[int]] = Field(
        default_factory=list, description="[start, end) character spans of the snippet holding a query word."
    )
    note: str | None = Field(default=None, description="A caveat, e.g. that the visual model is a random stand-in.")


class SearchResult(BaseModel):
    """One ranked item."""

    id: str = Field(description="Item id (stable for one version of a document).")
    score: float = Field(description="Final score (higher is better; scale depends on the last stage).")
    modality: ModalityName = Field(description="page, image, clip or audio.")
    source: str = Field(description="Source document URI as ingested.")
    page: int | None = Field(default=None, description="1-based page number for pages.")
    start_s: float | None = Field(default=None, description="Clip start, seconds.")
    end_s: float | None = Field(default=None, description="Clip end, seconds.")
    snippet: str = Field(default="", description="The start of the item's text (text layer or OCR).")
    image_url: str = Field(description="GET this for the page image / image / clip keyframe (JPEG).")
    thumbnail_url: str = Field(description="GET this for a small PNG thumbnail.")
    scores: dict[str, float] = Field(default_factory=dict, description="Per-stage scores (debugging).")
    evidence: Evidence | None = Field(default=None, description="With evidence: true, why it matched.")


class SearchResponse(BaseModel):
    """Response of POST /v1/search."""

    results: list[SearchResult] = Field(description="Best first.")
    mode: SearchMode = Field(description="The mode actually used.")
    collection: str = Field(description="The collection searched.")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Per-stage server time.")
    notes: list[str] = Field(
        default_factory=list,
        description="What the client should know about how the query was searched (e.g. that the collection's "
        "calibration gives the visual channel, which the image searches, no weight in hybrid mode).",
    )


class AnswerRequest(_Req):
    """POST /v1/answer (JSON, or multipart/form-data as for /v1/search)."""

    image: str | None = Field(default=None, description=QUESTION_IMAGE)
    query: str = Field(
        default="",
        validate_default=True,
        description="The question (natural language); may be empty with an image (then: what it shows).",
    )
    k: int | None = Field(
        default=None, ge=1, description="Ranked items given to the generator (default generator.contexts)."
    )
    collection: str | None = Field(
        default=None, pattern=COLLECTION_PATTERN, description="Collection to search (default: the store's default)."
    )
    mode: SearchMode | None = Field(default=None, description="Search mode (default: the retriever's).")
    filters: SearchFiltersIn | None = Field(default=None, description="Optional typed filters.")
    rerank: bool | None = Field(
        default=None,
        description="Reranking: null (default) as the collection's calibration decided (skipped when it did not "
        "improve the collection's probe queries); false never; true at the configured or calibrated weight.",
    )
    rerank_weight: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="How much the reranker's order counts against the fused order (1: its order alone); overrides "
        "the configured and calibrated weight.",
    )
    weights: dict[Channel, float] | None = Field(
        default=None,
        description="Hybrid channel weights (visual, bm25, dense; a channel left out gets 0); default: the config's "
        "retriever.fusion_weights, else the collection's calibration.",
    )
    fusion: FusionMethod | None = Field(default=None, description="Hybrid fusion method: rrf or score.")
    evidence: bool = Field(
        default=False,
        description="Also return each citation's evidence: regions of the page or clip frames where the query's tokens "
        "matched (boxes in normalised coordinates from the late-interaction model's per-patch MaxSim contributions) "
        "and the query's words in the snippet. Off by default: it costs a store read and some maths per citation.",
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        from mmrag.config import check_weights

        return check_weights(v)

    @field_validator("query")
    @classmethod
    def _query(cls, v: str, info: ValidationInfo) -> str:
        if not v.strip() and info.data.get("image") is None:
            raise ValueError("must not be empty (or send an image to search by)")
        return no_controls(v)

    stream: bool = Field(
        default=False,
        description="Server-sent events: `token` events ({text}), then `citations` ({citations}), then `done` "
        "({finish_reason, usage, timings}); an `error` event if the generator fails mid-answer.",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Longest answer in tokens (default models.generator.max_tokens)."
    )
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature (0: greedy).")


class Citation(BaseModel):
    """A source handed to the generator, numbered as the answer cites it (``[n]``)."""

    n: int = Field(description="The number the answer uses for this source: [n].")
    cited: bool = Field(description="Whether the answer text cites [n].")
    id: str = Field(description="Item id.")
    modality: ModalityName = Field(description="page, image, clip or audio.")
    source: str = Field(description="Source document URI as ingested.")
    page: int | None = Field(default=None, description="1-based page number for pages.")
    start_s: float | None = Field(default=None, description="Clip start, seconds.")
    end_s: float | None = Field(default=None, description="Clip end, seconds.")
    score: float = Field(description="Retrieval (or rerank) score.")
    snippet: str = Field(default="", description="The start of the item's text.")
    image_url: str = Field(description="GET this for the page image / image / clip keyframe (JPEG).")
    thumbnail_url: str = Field(description="GET this for a small PNG thumbnail.")
    evidence: Evidence | None = Field(default=None, description="With evidence: true, why it matched.")


class ItemInfo(BaseModel):
    """GET /v1/items/{id}: one page, image or clip, and where its media are."""

    id: str = Field(description="Item id.")
    collection: str = Field(description="Its collection.")
    doc_id: str | None = Field(
        default=None, description="Its document's id (a clip's: POST /v1/videos/{doc_id}/summary summarises the video)."
    )
    modality: ModalityName = Field(description="page, image, clip or audio.")
    source: str = Field(description="Source document URI as ingested.")
    page: int | None = Field(default=None, description="1-based page number for pages.")
    start_s: float | None = Field(default=None, description="Clip start, seconds.")
    end_s: float | None = Field(default=None, description="Clip end, seconds.")
    width: int | None = Field(default=None, description="Pixels of the rendered page / image / frames.")
    height: int | None = Field(default=None, description="Pixels of the rendered page / image / frames.")
    text: str = Field(default="", description="The item's text (text layer or OCR), at most 2,000 characters.")
    frame_ts: list[float] = Field(default_factory=list, description="Clips: the sampled frames' times, seconds.")
    image_url: str = Field(description="The page image / image / clip keyframe (JPEG).")
    thumbnail_url: str = Field(description="A small PNG thumbnail.")
    frame_urls: list[str] = Field(default_factory=list, description="Clips: each sampled frame (JPEG).")
    video_url: str | None = Field(
        default=None,
        description="Clips: the source video (Range requests), only while the file it was ingested from is still "
        "there unchanged; uploaded videos are not kept, so null for them.",
    )
    evidence_url: str = Field(description="GET with ?query=...&frame=n: the image with the matching regions drawn.")


class Usage(BaseModel):
    prompt_tokens: int = Field(default=0, description="Prompt tokens, images included.")
    completion_tokens: int = Field(default=0, description="Generated tokens.")
    total_tokens: int = Field(default=0, description="Both.")


class AnswerResponse(BaseModel):
    """Response of POST /v1/answer (without ``stream``)."""

    answer: str = Field(description="The generated answer; [n] marks cite citations[n - 1].")
    notes: list[str] = Field(
        default_factory=list,
        description="What the client should know about how the question was handled (e.g. that a text-only "
        "generator could not look at the question's image, which was then used for retrieval only).",
    )
    citations: list[Citation] = Field(description="The sources given to the generator, in prompt order.")
    model: str = Field(description="Served model name.")
    finish_reason: str | None = Field(default=None, description="stop, or length when max_tokens cut it.")
    usage: Usage = Field(default_factory=Usage, description="Token counts reported by the engine.")
    collection: str = Field(description="The collection searched.")
    mode: SearchMode = Field(description="The search mode used.")
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds per stage: retrieve, rerank, prompt (fetching images and building the prompt), "
        "ttft (request start to first token), generate (the generator call), total.",
    )


class ChatOptions(_Req):
    """mmrag's own options on POST /v1/chat/completions (the ``mmrag`` field; ``extra_body`` in the openai client)."""

    k: int | None = Field(default=None, ge=1, description="Ranked items given to the generator.")
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN, description="Collection to search.")
    mode: SearchMode | None = Field(default=None, description="Search mode.")
    filters: SearchFiltersIn | None = Field(default=None, description="Typed filters.")
    rerank: bool | None = Field(default=None, description="Use the reranker (null: as calibrated).")
    evidence: bool = Field(default=False, description="Evidence regions and highlights on the citations.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = Field(default=False, description="Send a last chunk with usage.")


class ChatMessage(BaseModel):
    """An OpenAI chat message; only the text of user messages is used (see ChatRequest)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"] = Field(description="Who speaks.")
    content: str | list[dict[str, Any]] | None = Field(default=None, description="Text, or a list of parts.")

    @field_validator("content")
    @classmethod
    def _text(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for part in [v] if isinstance(v, str) else (v or []):
            text = part if isinstance(part, str) else part.get("text")
            if isinstance(text, str):
                no_controls(text)
        return v


class ChatRequest(BaseModel):
    """POST /v1/chat/completions: the OpenAI request. The last user message is the question: mmrag retrieves for
    it (with the user message before it when it is a short follow-up) and answers it from the retrieved sources;
    earlier user and assistant turns go to the model as chat turns, the most recent first, within a quarter of the
    prompt budget (system messages are not: the system prompt is mmrag's). Unknown OpenAI fields
    are ignored, as vLLM's server does; ``ignore_eos``, ``min_tokens``, ``top_k`` and the penalties are passed
    to vLLM."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(default=None, description="Must be the served model name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1, max_length=256, description="The conversation.")
    max_tokens: int | None = Field(default=None, ge=1, description="Longest answer in tokens.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Same as max_tokens (newer name).")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature (default 0).")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling.")
    seed: int | None = Field(default=None, description="Sampling seed.")
    stop: str | list[str] | None = Field(default=None, description="Stop strings.")
    n: int = Field(default=1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = Field(default=False, description="Stream chat.completion.chunk events.")
    stream_options: StreamOptions | None = Field(default=None, description="include_usage: a last usage chunk.")
    mmrag: ChatOptions | None = Field(default=None, description="Retrieval options.")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop strings")
        return v


class SummaryRequest(_Req):
    """POST /v1/videos/{doc_id}/summary (the body may be left out)."""

    stream: bool = Field(
        default=False,
        description="Server-sent events: `chapter` (a Chapter, as each is done, in the order they finish), `token` "
        "({text}: the summary as it is generated), then `done` (the whole SummaryResponse); `error` if the "
        "generator fails mid-way.",
    )
    refresh: bool = Field(
        default=False, description="Make the summary again even when the store holds one (it then replaces it)."
    )


class Chapter(BaseModel):
    """A part of a video: a run of consecutive clips, summarised by the generator from their text (and frames)."""

    index: int = Field(description="0-based position of the chapter in the video.")
    start_s: float = Field(description="Start, seconds: its first clip's start.")
    end_s: float = Field(description="End, seconds: its last clip's end (cut at the next chapter's start).")
    summary: str = Field(description="What happens in it, in the generator's words.")
    generated: bool = Field(
        description="False when the chapter had nothing a model could read (no speech, no on-screen text, no frames "
        "a vision model sees): the summary then says so and no generator was asked."
    )
    citations: list[Citation] = Field(
        description="The clips it was made from, in time order: n numbers the video's clips from 1, cited is true and "
        "score 1 for each (every clip was read, none ranked)."
    )


class SummaryResponse(BaseModel):
    """Response of POST /v1/videos/{doc_id}/summary (without ``stream``)."""

    doc_id: str = Field(description="The video's document id.")
    collection: str = Field(description="Its collection.")
    source: str = Field(description="The video as ingested.")
    duration_s: float = Field(description="The end of its last clip, seconds.")
    summary: str = Field(description="The whole video, from the chapter summaries.")
    chapters: list[Chapter] = Field(description="The chapters in time order.")
    model: str = Field(description="Served model name.")
    cached: bool = Field(description="Whether this came from the store's summaries cache.")
    usage: dict[str, int] = Field(
        default_factory=dict, description="Tokens over every generator call (and their number: calls), when made."
    )
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds from the request's start when made: first_chapter, map (all chapters), "
        "summary_first_token, total; a cached answer has only lookup and total.",
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_request, not_found.")
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(default=None, description="The request field at fault, when there is one.")


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_json(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(code=code, message=message, field=field)).model_dump()
