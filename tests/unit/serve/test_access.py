"""The access middleware and the scoped store together: every route of an app is authenticated, every store read
is limited to the key's collections, and each request leaves one audit line without the key."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mmrag.auth.guard import Authenticator
from mmrag.auth.keys import KeyStore
from mmrag.auth.quota import QuotaBook, Quotas
from mmrag.serve import access
from mmrag.serve.admission import Gate
from mmrag.serve.http_layer import install_error_handlers
from mmrag.store import LanceStore
from mmrag.store.scoped import ScopedStore

pytestmark = pytest.mark.unit

ITEMS = {
    "a" * 32: {"collection": "docs", "text": "tenant a's page"},
    "b" * 32: {"collection": "other", "text": "tenant b's page"},
}


class FakeStore:
    def collections(self) -> set[str]:
        return {"docs", "other", "third"}

    def calibrations(self) -> dict:
        return {c: {"fusion": "rrf"} for c in self.collections()}

    def stats(self) -> dict:
        return {"uri": "/secret/path", "collections": {c: {"items": {}} for c in self.collections()}}

    def get_item(self, item_id: str, columns: list[str]) -> dict | None:
        row = ITEMS.get(item_id)
        return {c: row[c] for c in columns} if row else None

    def get_items(self, ids: list[str], columns: list[str]) -> dict:
        return {i: {c: ITEMS[i][c] for c in columns} for i in ids if i in ITEMS}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    keys = KeyStore(LanceStore(str(tmp_path_factory.mktemp("keys") / "db")))
    key_a, _ = keys.create(["docs"], name="a")
    key_b, _ = keys.create(["other", "third"], name="b")
    key_r, _ = keys.create(["docs"], name="limited", rate_per_s=2)
    store = ScopedStore(FakeStore())
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(access.AccessControl)

    @app.get("/v1/collections")
    async def collections() -> dict:
        return {"collections": sorted(store.collections()), "calibrated": sorted(store.calibrations())}

    @app.get("/v1/stats")
    async def stats() -> dict:
        return store.stats()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict:
        import asyncio

        row = await asyncio.to_thread(store.get_item, item_id, ["text"])  # threads see the request's principal
        return {"found": row is not None}

    @app.post("/v1/many")
    async def many(ids: list[str]) -> dict:
        return {"found": sorted(store.get_items(ids, ["text"]))}

    @app.post("/v1/search")
    async def search() -> dict:
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"collections": sorted(store.collections())}

    quotas = Quotas(None, book=QuotaBook())
    gate = Gate("search", slo_s=1.0, initial=4, fixed=4)
    access.install(Authenticator(keys, required=True), quotas=quotas, gates={"/v1/search": gate})
    with TestClient(app) as client:
        yield client, key_a, key_b, key_r, gate


def _h(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_is_401_json_with_www_authenticate(world) -> None:
    client, *_ = world
    for path in ("/v1/collections", "/v1/items/" + "a" * 32, "/v1/nonexistent"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "missing_api_key"
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/v1/collections", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_each_key_sees_its_own_collections_only(world) -> None:
    client, key_a, key_b, *_ = world
    assert client.get("/v1/collections", headers=_h(key_a)).json() == {
        "collections": ["docs"],
        "calibrated": ["docs"],
    }
    assert client.get("/v1/collections", headers=_h(key_b)).json()["collections"] == ["other", "third"]
    st = client.get("/v1/stats", headers=_h(key_a)).json()
    assert st == {"collections": {"docs": {"items": {}}}}, "no other tenant's counts, no store path"


def test_items_of_another_tenant_are_not_found(world) -> None:
    client, key_a, key_b, *_ = world
    assert client.get("/v1/items/" + "a" * 32, headers=_h(key_a)).json() == {"found": True}
    assert client.get("/v1/items/" + "a" * 32, headers=_h(key_b)).json() == {"found": False}
    got = client.post("/v1/many", headers=_h(key_b), json=["a" * 32, "b" * 32]).json()
    assert got == {"found": ["b" * 32]}


def test_health_needs_no_key_and_shows_nothing_without_one(world) -> None:
    client, key_a, *_ = world
    assert client.get("/healthz").json() == {"collections": []}
    assert client.get("/healthz", headers=_h(key_a)).json() == {"collections": ["docs"]}


def test_store_reads_outside_a_request_fail_closed() -> None:
    from mmrag.auth.context import NoPrincipal

    with pytest.raises(NoPrincipal):
        ScopedStore(FakeStore()).collections()


def test_one_audit_line_per_request_without_the_key(world) -> None:
    client, key_a, *_ = world
    lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    h = Grab()
    access.audit_log.addHandler(h)
    try:
        client.get("/v1/collections", headers=_h(key_a))
        client.get("/v1/collections")
    finally:
        access.audit_log.removeHandler(h)
    assert len(lines) == 2
    ok, denied = (json.loads(x) for x in lines)
    assert ok["status"] == 200 and ok["key_id"] == key_a.split("_")[1] and ok["path"] == "/v1/collections"
    assert denied["status"] == 401 and denied["key_id"] is None
    assert {"ts", "method", "latency_ms", "collection"} <= set(ok)
    assert all(key_a not in x and key_a.split("_", 2)[2] not in x for x in lines)


def test_a_key_over_its_rate_gets_429_with_retry_after(world) -> None:
    client, key_a, _, key_r, _ = world
    codes = [client.post("/v1/search", headers=_h(key_r)).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    r = client.post("/v1/search", headers=_h(key_r))
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    assert client.post("/v1/search", headers=_h(key_a)).status_code == 200, "other keys are not limited"


def test_overload_is_503_at_once_with_retry_after(world) -> None:
    client, key_a, *_, gate = world
    gate.inflight = gate.limit  # as if the replica held as many searches as it can serve within the SLO
    try:
        r = client.post("/v1/search", headers=_h(key_a))
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
        assert client.get("/v1/collections", headers=_h(key_a)).status_code == 200, "other paths pass"
    finally:
        gate.inflight = 0
    assert client.post("/v1/search", headers=_h(key_a)).status_code == 200
    assert gate.inflight == 0, "every admitted request left the gate"
