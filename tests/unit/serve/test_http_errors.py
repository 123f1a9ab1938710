"""The HTTP error layer: JSON errors with stable codes, no input echo, NaN and huge bodies handled."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from mmrag.serve.http_layer import MAX_BODY_BYTES, BodyLimit, install_error_handlers, set_upload_limit
from mmrag.serve.schemas import SearchRequest

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict:
        return {"ok": req.query}

    @app.post("/v1/collections/{name}/documents")
    async def upload(name: str, request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.get("/boom/{kind}")
    async def boom(kind: str) -> dict:
        from ray.exceptions import ActorDiedError
        from ray.serve.exceptions import BackPressureError

        raise {"busy": BackPressureError(num_queued_requests=9, max_queued_requests=8), "dead": ActorDiedError()}.get(
            kind, RuntimeError("secret internals")
        )

    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(autouse=True)
def _default_query_limit() -> Iterator[None]:
    """A gateway built by another test sets the image-question body limit process-wide; these tests check the
    plain limit."""
    from mmrag.serve import http_layer

    saved = http_layer._query_limit["bytes"]
    http_layer._query_limit["bytes"] = 0
    yield
    http_layer._query_limit["bytes"] = saved


def _err(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"])
    return body["error"]


def test_valid_request_passes(client: TestClient) -> None:
    assert client.post("/v1/search", json={"query": "x", "k": 3}).json() == {"ok": "x"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": "ten"}, "k"),
        ({"k": 3}, "query"),
        ({"query": "x", "mode": "semantic"}, "mode"),
        ({"query": "x", "collection": "a' OR 1=1"}, "collection"),
        ({"query": "x", "filters": {"modalities": ["video"]}}, "filters.modalities.0"),
        ({"query": "x", "bogus": 1}, "bogus"),
        # strict: no coercion of strings or booleans into numbers
        ({"query": "x", "k": "5"}, "k"),
        ({"query": "x", "k": True}, "k"),
        ({"query": "x", "k": 5.0}, "k"),
        ({"query": "x", "rerank": "yes"}, "rerank"),
        ({"query": "x", "filters": {"page_min": "2"}}, "filters.page_min"),
        # control characters in queries and names
        ({"query": "a\u0000b"}, "query"),
        ({"query": "ring \u0007 bell"}, "query"),
        ({"query": "x", "filters": {"source_uris": ["/a\u0000.pdf"]}}, "filters.source_uris"),
    ],
)
def test_bad_fields_are_400_with_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 400
    e = _err(r)
    assert e["code"] == "invalid_request" and e["field"] == field


def test_control_character_error_says_which_and_where(client: TestClient) -> None:
    e = _err(client.post("/v1/search", json={"query": "ab\u0000"}))
    assert "U+0000" in e["message"] and "position 2" in e["message"]
    ok = client.post("/v1/search", json={"query": "tabs\tand\nnewlines are fine", "k": 2})
    assert ok.status_code == 200


def test_chat_messages_are_strict_too() -> None:
    from pydantic import ValidationError

    from mmrag.serve.schemas import ChatRequest

    ok = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "temperature": 0}
    assert ChatRequest.model_validate(ok).temperature == 0.0, "an integer is a number"
    for bad in (
        {"messages": [{"role": "user", "content": "a\u0000"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\u001b[31m"}]}]},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"},
        {"messages": [{"role": "user", "content": "hi"}], "stream": "true"},
    ):
        with pytest.raises(ValidationError):
            ChatRequest.model_validate(bad)


def test_nan_and_infinite_numbers_do_not_crash(client: TestClient) -> None:
    for raw in ('{"query": "x", "k": NaN}', '{"query": "x", "filters": {"time_min_s": 1e999}}'):
        r = client.post("/v1/search", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text


def test_invalid_json_and_no_echo(client: TestClient) -> None:
    r = client.post("/v1/search", content="{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and _err(r)["code"] == "invalid_json"
    secret = "s3cr3t" * 1000
    r = client.post("/v1/search", json={"query": secret, "k": -1})
    assert r.status_code == 400 and secret not in r.text and len(r.content) < 2000


def test_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/v1/search", json={"query": "x" * (MAX_BODY_BYTES + 10)})
    assert r.status_code == 413 and _err(r)["code"] == "request_too_large"


def test_chunked_body_is_counted_as_it_streams(client: TestClient) -> None:
    """No Content-Length (chunked): the bytes are counted as they arrive and the request ends at the limit."""

    def chunks():
        yield b'{"query": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 8):
            yield b"x" * 65536
        yield b'"}'

    r = client.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and _err(r)["code"] == "request_too_large"
    # a small chunked body still goes through
    r = client.post("/v1/search", content=iter([b'{"query": ', b'"ok"}']), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json() == {"ok": "ok"}


def test_uploads_have_their_own_limit(client: TestClient) -> None:
    """Uploads may be larger than other bodies (ingestor.max_upload_bytes), and are limited all the same."""
    set_upload_limit(3 * MAX_BODY_BYTES)
    try:
        body = b"x" * (2 * MAX_BODY_BYTES)
        r = client.post("/v1/collections/docs/documents", content=body)
        assert r.status_code == 200 and r.json() == {"bytes": len(body)}
        r = client.post("/v1/collections/docs/documents", content=b"x" * (3 * MAX_BODY_BYTES + 1))
        assert r.status_code == 413 and str(3 * MAX_BODY_BYTES) in _err(r)["message"]
        chunked = client.post("/v1/collections/docs/documents", content=iter([b"x" * MAX_BODY_BYTES] * 4))
        assert chunked.status_code == 413
        # the larger limit is only for uploads
        assert client.post("/v1/search", content=body, headers={"content-type": "application/json"}).status_code == 413
    finally:
        set_upload_limit(256 * 1024**2)


def test_unknown_route_is_json_404(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and _err(r)["code"] == "not_found"


def test_body_limit_stops_reading_at_the_limit() -> None:
    """At the ASGI level: the app reads until the limit, then sees a disconnect; the client gets one 413."""
    import asyncio

    pulled, sent = [], []

    async def receive() -> dict:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless chunked body

    async def send(msg: dict) -> None:
        sent.append(msg)

    async def app(scope: dict, recv, snd) -> None:
        while (await recv())["type"] == "http.request":
            pass
        await snd({"type": "http.response.start", "status": 400, "headers": []})  # dropped: 413 already sent

    scope = {"type": "http", "method": "POST", "path": "/v1/search", "headers": []}
    asyncio.run(BodyLimit(app, max_bytes=10_000)(scope, receive, send))
    assert len(pulled) == 11  # 11 x 1000 bytes passes 10,000; nothing more is read
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]


def test_unexpected_errors_are_json_too(client: TestClient) -> None:
    busy = client.get("/boom/busy")
    assert busy.status_code == 503 and _err(busy)["code"] == "overloaded" and busy.headers["retry-after"] == "1"
    dead = client.get("/boom/dead")
    assert dead.status_code == 503 and _err(dead)["code"] == "unavailable"
    other = client.get("/boom/other")
    assert other.status_code == 500 and _err(other)["code"] == "internal_error"
    assert "secret internals" not in other.text
