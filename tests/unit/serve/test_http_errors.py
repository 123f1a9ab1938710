"""The HTTP error layer: JSON errors with stable codes, no input echo, NaN and huge bodies handled."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mmrag.serve.gateway import MAX_BODY_BYTES, install_error_handlers
from mmrag.serve.schemas import SearchRequest

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict:
        return {"ok": req.query}

    return TestClient(app)


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
        ({"query": "x", "filters": {"modalities": ["audio"]}}, "filters.modalities.0"),
        ({"query": "x", "bogus": 1}, "bogus"),
    ],
)
def test_bad_fields_are_400_with_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 400
    e = _err(r)
    assert e["code"] == "invalid_request" and e["field"] == field


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


def test_unknown_route_is_json_404(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and _err(r)["code"] == "not_found"
