"""API keys and tenant isolation through the real Serve app (server.auth: required): two tenants, keys made with
the CLI, every endpoint asked with no key, a bad key, the right key and the other tenant's key; hostile filters,
ids and cached items; the official openai client with a key; revocation and expiry within 5 s; a key's request
rate shared by the two gateway replicas; HAProxy's stats and metrics ports on loopback only."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mmrag.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mmrag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmrag.cli.main", *args], capture_output=True, text=True, timeout=120)


def _key(db: str, *args: str) -> tuple[str, str]:
    out = _mmrag("keys", "create", "--db", db, "--json", *args)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    return rec["key"], rec["key_id"]


@pytest.fixture(scope="module")
def tenants(ray_local, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    """Tenant a reads `docs` (coin.pdf); tenant b reads `other` (cup.mp4 and another coin.pdf)."""
    from ray import serve

    from mmrag.ingest.pipeline import ingest
    from mmrag.ingest.warm import WarmStages
    from mmrag.serve.run import run_app

    d = tmp_path_factory.mktemp("auth")
    for name in ("coin.pdf", "cup.mp4"):
        shutil.copy(DATA / name, d / name)
    (d / "b").mkdir()
    shutil.copy(DATA / "coin.pdf", d / "b" / "coin.pdf")
    db = str(d / "db")
    cfg = load_config(
        "local-cpu",
        {
            "store": {"uri": db},
            "ingest": {"ocr": "never"},
            "server": {"port": _free_port(), "auth": "required"},
            "gateway": {"num_replicas": 2, "autoscaling": None},  # quotas must hold across replicas
            "generator": {"engine": "echo"},
            "models": {
                "generator": {
                    "model": "tiny:qwen2-vl",
                    "max_model_len": 1024,
                    "max_tokens": 32,
                    "max_prompt_tokens": None,
                }
            },
        },
    )
    # in this process with warm stages (Ray Data's start-up is test_ingest's to pay); no calibration: not what these
    # tests are about
    warm = WarmStages(cfg)
    ingest([str(d / "coin.pdf")], cfg, collection="docs", calibrate=False, runner=warm)
    ingest([str(d / "cup.mp4"), str(d / "b" / "coin.pdf")], cfg, collection="other", calibrate=False, runner=warm)
    del warm
    # made in-process (the CLI, `mmrag keys create`, is tested below): four CLI starts cost ~15 s of CI
    from mmrag.auth.keys import KeyStore
    from mmrag.store import LanceStore

    keys = KeyStore(LanceStore(db))
    a, a_rec = keys.create(["docs"], name="tenant a")
    b, b_rec = keys.create(["other"], name="tenant b")
    limited, _ = keys.create(["docs"], name="four per second", rate_per_s=4)
    tokens, _ = keys.create(["docs"], name="ten tokens a minute", tokens_per_min=10)
    a_id, b_id = a_rec.key_id, b_rec.key_id
    url = run_app(cfg)
    yield {
        "url": url,
        "db": db,
        "a": a,
        "b": b,
        "a_id": a_id,
        "b_id": b_id,
        "dir": d,
        "limited": limited,
        "tokens": tokens,
    }
    serve.shutdown()


def _h(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _search(t: dict, key: str | None, **body) -> httpx.Response:
    return httpx.post(f"{t['url']}/v1/search", json=body, headers=_h(key), timeout=60)


def test_no_key_or_a_bad_key_is_401_on_every_endpoint(tenants) -> None:
    url = tenants["url"]
    calls = [
        ("POST", "/v1/search", {"query": "coin", "collection": "docs"}),
        ("POST", "/v1/answer", {"query": "coin", "collection": "docs"}),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "coin"}]}),
        ("GET", "/v1/collections", None),
        ("GET", "/v1/models", None),
        ("GET", f"/v1/items/{'0' * 32}/image", None),
        ("GET", "/v1/nonexistent", None),
    ]
    bad = tenants["a"][:-3] + "zzz"
    for method, path, body in calls:
        for key, code in ((None, "missing_api_key"), (bad, "invalid_api_key"), ("sk-123", "invalid_api_key")):
            r = httpx.request(method, url + path, json=body, headers=_h(key), timeout=60)
            assert r.status_code == 401, (path, key, r.text)
            assert r.json()["error"]["code"] == code and "www-authenticate" in r.headers
    health = httpx.get(f"{url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["collections"] == [], "health tells no names"
    assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 200


def test_each_tenant_sees_only_its_collections(tenants) -> None:
    t = tenants
    mine = _search(t, t["a"], query="coin toss table", collection="docs", k=5)
    assert mine.status_code == 200 and mine.json()["results"]
    assert all(r["source"].endswith("/coin.pdf") and "/b/" not in r["source"] for r in mine.json()["results"])
    for key, theirs in ((t["a"], "other"), (t["b"], "docs")):
        r = _search(t, key, query="coin", collection=theirs)
        nosuch = _search(t, key, query="coin", collection="no-such-collection")
        assert r.status_code == nosuch.status_code == 404, "another tenant's collection looks like none at all"
        assert r.json()["error"]["code"] == nosuch.json()["error"]["code"] == "collection_not_found"
    default = _search(t, t["a"], query="coin")  # the store's default collection is not tenant a's
    assert default.status_code == 404
    colls = httpx.get(f"{t['url']}/v1/collections", headers=_h(t["a"]), timeout=30).json()["collections"]
    assert set(colls) == {"docs"}
    assert httpx.get(f"{t['url']}/healthz", headers=_h(t["b"]), timeout=30).json()["collections"] == ["other"]


def test_answers_and_chat_are_scoped(tenants) -> None:
    t = tenants
    url = t["url"]
    for path, body in (
        ("/v1/answer", {"query": "coin", "collection": "docs", "k": 2}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "coin"}], "mmrag": {"collection": "docs"}}),
    ):
        assert httpx.post(url + path, json=body, headers=_h(t["a"]), timeout=120).status_code == 200
        r = httpx.post(url + path, json=body, headers=_h(t["b"]), timeout=120)
        assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found", r.text


def test_other_tenants_items_and_cached_sources_stay_hidden(tenants) -> None:
    """Tenant a's answer puts its pages in the gateway's prompt cache; tenant b still cannot reach them by id,
    and b's own answers cite only b's items."""
    t = tenants
    url = t["url"]
    ans = httpx.post(url + "/v1/answer", json={"query": "coin", "collection": "docs", "k": 3}, headers=_h(t["a"]))
    a_ids = [c["id"] for c in ans.json()["citations"]]
    assert a_ids
    for item in a_ids:
        for kind in ("image", "thumbnail"):
            assert httpx.get(f"{url}/v1/items/{item}/{kind}", headers=_h(t["a"]), timeout=30).status_code == 200
            r = httpx.get(f"{url}/v1/items/{item}/{kind}", headers=_h(t["b"]), timeout=30)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    b_ans = httpx.post(
        url + "/v1/answer", json={"query": "coin", "collection": "other", "k": 10}, headers=_h(t["b"]), timeout=120
    ).json()
    b_ids = {c["id"] for c in b_ans["citations"]}
    assert b_ids and not b_ids & set(a_ids)
    # hostile filters: a's own collection, asking for b's documents by source and id, finds nothing of b's
    b_src = str(t["dir"] / "b" / "coin.pdf")
    from mmrag.store.schema import doc_id

    for filters in ({"source_uris": [b_src]}, {"doc_ids": [doc_id("other", b_src)]}):
        r = _search(t, t["a"], query="coin", collection="docs", k=50, filters=filters)
        assert r.status_code == 200 and r.json()["results"] == [], filters


def test_the_openai_client_with_a_key(tenants) -> None:
    import openai

    t = tenants
    client = openai.OpenAI(base_url=f"{t['url']}/v1", api_key=t["a"], max_retries=0)
    assert [m.id for m in client.models.list()] == ["mmrag"]
    done = client.chat.completions.create(
        model="mmrag",
        messages=[{"role": "user", "content": "coin"}],
        max_tokens=8,
        extra_body={"mmrag": {"collection": "docs", "k": 2}},
    )
    assert done.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{t['url']}/v1", api_key="wrong", max_retries=0).models.list()


def test_revoked_and_expired_keys_stop_within_5_s(tenants) -> None:
    t = tenants
    key, key_id = _key(t["db"], "-c", "docs", "--name", "soon revoked", "--rate", "50", "--tokens-per-min", "9000")
    short, _ = _key(t["db"], "-c", "docs", "--expires", str(2 / 86400))  # two seconds
    assert _search(t, key, query="coin", collection="docs").status_code == 200
    out = _mmrag("keys", "revoke", key_id, "--db", t["db"])
    assert out.returncode == 0, out.stderr
    revoked_at = time.monotonic()
    time.sleep(max(0.0, 5.0 - (time.monotonic() - revoked_at)))
    # 5 s on, every replica refuses it (a fresh connection each time: HAProxy spreads them over both replicas)
    for _ in range(6):
        r = httpx.post(
            f"{t['url']}/v1/search",
            json={"query": "coin", "collection": "docs"},
            headers={**_h(key), "Connection": "close"},
            timeout=60,
        )
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"], r.text
    time.sleep(2.0)
    r = _search(t, short, query="coin", collection="docs")
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    listed = json.loads(_mmrag("keys", "list", "--db", t["db"], "--json").stdout)
    mine = {r["key_id"]: r for r in listed}[key_id]
    assert (mine["status"], mine["rate_per_s"], mine["tokens_per_min"]) == ("revoked", 50, 9000), mine
    assert all("hash" not in k for r in listed for k in r)


def test_a_keys_rate_is_shared_by_both_gateway_replicas(tenants) -> None:
    """Four requests per second for the key, whichever of the two replicas HAProxy hands each request to."""
    from ray import serve

    from mmrag import constants

    t = tenants
    status = serve.status().applications[constants.APP_NAME].deployments[constants.GATEWAY_DEPLOYMENT]
    assert status.replica_states.get("RUNNING") == 2
    body = {"query": "coin", "collection": "docs", "k": 1}
    with httpx.Client(timeout=60) as c:  # a fresh connection per request spreads them over the replicas
        t0 = time.monotonic()
        codes = []
        for _ in range(12):
            codes.append(
                c.post(f"{t['url']}/v1/search", json=body, headers={**_h(t["limited"]), "Connection": "close"})
            )
        spent = time.monotonic() - t0
    ok = [r for r in codes if r.status_code == 200]
    limited = [r for r in codes if r.status_code == 429]
    assert len(ok) + len(limited) == 12
    # a moving one-second window: at most 4 per second of the burst, whichever replica answered
    assert 4 <= len(ok) <= 4 * math.ceil(spent + 1e-9), (len(ok), spent)
    assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].json()["error"]["code"] == "rate_limited"


def test_haproxy_admin_ports_listen_on_loopback_only(tenants) -> None:
    import psutil

    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in (8404, 9101)
    }
    assert listening, "HAProxy's stats and metrics ports are not listening"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening


def test_generated_tokens_per_minute_are_counted_across_replicas(tenants) -> None:
    """The first answer spends the key's minute of tokens (the echo engine writes up to 32); the next generation
    is 429 on whichever replica, while searching with the same key still works."""
    t = tenants
    body = {"query": "coin", "collection": "docs", "k": 2, "max_tokens": 32}
    first = httpx.post(f"{t['url']}/v1/answer", json=body, headers=_h(t["tokens"]), timeout=120)
    assert first.status_code == 200 and first.json()["usage"]["completion_tokens"] >= 10
    time.sleep(1.0)  # the charge is sent after the answer, without waiting for it
    for _ in range(3):
        r = httpx.post(
            f"{t['url']}/v1/answer", json=body, headers={**_h(t["tokens"]), "Connection": "close"}, timeout=120
        )
        assert r.status_code == 429 and "generated tokens per minute" in r.json()["error"]["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
    assert _search(t, t["tokens"], query="coin", collection="docs").status_code == 200


def test_gateway_replicas_hand_their_admission_limits_to_haproxy(tenants) -> None:
    """Each gateway replica sets its server's maxconn in HAProxy's search and generation backends (HAProxy's own is 0,
    unlimited), so that HAProxy refuses the overflow instead of Python. The value is the replica's gate limit: 64
    (admission.initial_inflight) until the gate measures a saturated second, or less after a second whose p90 overran
    the SLO (the first searches of a fresh replica can, on a loaded CI machine: it was 51 there). That the value
    follows the gate exactly is tested against a real HAProxy in tests/unit/serve/test_proxy_limits.py."""
    import ray

    from mmrag.serve.proxy_limits import runtime_command, socket_path

    sock = socket_path(ray.get_runtime_context().get_node_id())
    deadline = time.time() + 15
    gateways: list[list[str]] = []
    set_by_replica = lambda v: v.isdigit() and 2 <= int(v) <= 64  # noqa: E731  (min_inflight .. initial_inflight)
    while time.time() < deadline:
        stat = runtime_command(sock, "show stat").lstrip("# ").splitlines()
        head = stat[0].split(",")
        px, sv, slim = head.index("pxname"), head.index("svname"), head.index("slim")
        rows = [r.split(",") for r in stat[1:] if "-mmrag-" in r and "SERVE_REPLICA" in r]
        gateways = [r for r in rows if "Gateway" in r[sv]]
        if len(gateways) == 4 and all(set_by_replica(r[slim]) for r in gateways):
            break
        time.sleep(0.5)
    assert sorted(r[px].rsplit("-mmrag-", 1)[1] for r in gateways) == ["generate", "generate", "search", "search"]
    assert len({r[sv] for r in gateways}) == 2, "both gateway replicas"
    assert all(set_by_replica(r[slim]) for r in gateways), [(r[px], r[sv], r[slim]) for r in gateways]


def test_video_summaries_are_scoped(tenants) -> None:
    """Tenant b summarises its video (the echo engine sees its frames); to tenant a the same id is as unknown as
    a made-up one, and without a key it is 401."""
    from mmrag.store.schema import doc_id

    t = tenants
    video = doc_id("other", str(t["dir"] / "cup.mp4"))
    path = f"{t['url']}/v1/videos/{video}/summary"
    r = httpx.post(path, headers=_h(t["b"]), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["collection"] == "other" and out["cached"] is False and len(out["chapters"]) == 1
    ch = out["chapters"][0]
    assert ch["generated"] and ch["summary"].startswith("echo: 2 image"), "two of its frames were shown"
    assert 0 <= ch["start_s"] < ch["end_s"] <= out["duration_s"] <= 8.2 and ch["citations"][0]["modality"] == "clip"
    again = httpx.post(path, headers=_h(t["b"]), timeout=60).json()
    assert again["cached"] is True and again["chapters"] == out["chapters"] and again["summary"] == out["summary"]
    mine = httpx.post(path, headers=_h(t["a"]), timeout=60)
    unknown = httpx.post(f"{t['url']}/v1/videos/{'0' * 32}/summary", headers=_h(t["a"]), timeout=60)
    assert mine.status_code == unknown.status_code == 404
    assert mine.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert httpx.post(path, timeout=30).status_code == 401
