"""Ingestion as a service, through the real app (Serve, HAProxy, the Ingestor deployment, LanceDB): uploads become
jobs that publish searchable documents; hostile files get per-file errors and hurt nothing stored; keys' scopes
and collections hold; documents can be listed and deleted; uploads over the limit are 413."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mmrag.config import load_config

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
LIMIT = 2 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key(db: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "keys", "create", "--db", db, "--json", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    return str(json.loads(out.stdout)["key"])


@pytest.fixture(scope="module")
def app(ray_local, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    from ray import serve

    from mmrag.serve.run import run_app

    d = tmp_path_factory.mktemp("docs-api")
    db = str(d / "db")
    cfg = load_config(
        "local-cpu",
        {
            # a killed ingestion replica's lease runs out in 10 s (not 60) for the kill test
            "store": {"uri": db, "writer": {"lease_ttl_s": 10, "lease_renew_s": 3}},
            "ingest": {"ocr": "never"},
            "server": {"port": _free_port(), "auth": "required"},
            "generator": {"engine": "none"},
            # two ingestion replicas: uploads spread by the jobs each holds, and they take turns on the writer lease
            "ingestor": {
                "max_upload_bytes": LIMIT,
                "staging_dir": str(d / "staging"),
                "calibrate": False,
                "num_replicas": 2,
                "stats_period_s": 0.5,
            },
            **{s: {"num_replicas": 1, "autoscaling": None} for s in ("retriever", "reranker", "gateway")},
        },
    )
    keys = {
        "writer": _key(db, "-c", "docs", "-c", "more", "-c", "cli", "--scope", "write", "--name", "writer"),
        "reader": _key(db, "-c", "docs", "--name", "reader"),
        "other": _key(db, "-c", "other", "--scope", "write", "--name", "another tenant"),
    }
    url = run_app(cfg)
    yield {"url": url, "db": db, "dir": d, **keys}
    serve.shutdown()


def _h(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _upload(app: dict, key: str | None, collection: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return httpx.post(f"{app['url']}/v1/collections/{collection}/documents", files=parts, headers=_h(key), timeout=60)


def _wait(app: dict, key: str, job_id: str, timeout_s: float = 240) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        r = httpx.get(f"{app['url']}/v1/jobs/{job_id}", headers=_h(key), timeout=30)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish in {timeout_s} s: {job}")


def _search(app: dict, key: str, collection: str, query: str, mode: str = "text") -> list[dict]:
    # BM25 ("text"): these tests are about what is searchable when, not about fusion (the quality benchmark is);
    # on these tiny uncalibrated collections the random-weight visual channel can outrank an exact keyword match
    r = httpx.post(
        f"{app['url']}/v1/search",
        json={"query": query, "collection": collection, "k": 20, "mode": mode},
        headers=_h(key),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _until_found(app: dict, key: str, collection: str, query: str, timeout_s: float = 30) -> list[dict]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        r = httpx.post(
            f"{app['url']}/v1/search",
            json={"query": query, "collection": collection, "k": 20, "mode": "text"},
            headers=_h(key),
            timeout=60,
        )
        # a fresh store's first documents are published only once the full-text index exists: never a 400 here
        assert r.status_code == 200, r.text
        if r.json()["results"]:
            return r.json()["results"]
        time.sleep(0.5)
    return []


def test_an_upload_becomes_a_searchable_document(app) -> None:
    t0 = time.time()
    r = _upload(app, app["writer"], "docs", [("coin.pdf", (DATA / "coin.pdf").read_bytes())])
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["state"] in ("queued", "running")
    assert job["files"] == [{"name": "coin.pdf", "bytes": 106217, "state": "queued", "items": 0, "errors": []}]
    done = _wait(app, app["writer"], job["id"])
    assert done["state"] == "done", done
    (f,) = done["files"]
    assert f["state"] == "done" and f["items"] == 11 and not f["errors"] and f["doc_id"]
    assert done["counts"]["pages"] == 11 and done["timings"]["run_s"] > 0
    hits = _until_found(app, app["reader"], "docs", "conditional inference permutation tests")
    assert hits and hits[0]["source"] == "upload:coin.pdf", "the uploaded document never became searchable"
    print(f"upload to searchable: {time.time() - t0:.1f} s")
    # published before its dense text vectors (ingestor.text_after_publish); by the job's end they are in and the
    # dense channel finds the document too (MiniLM: real weights)
    dense = _search(app, app["reader"], "docs", "permutation tests for conditional independence", mode="dense")
    if not dense:  # the replica's index refresh runs every 0.5 s
        time.sleep(2)
        dense = _search(app, app["reader"], "docs", "permutation tests for conditional independence", mode="dense")
    assert dense and {h["source"] for h in dense} == {"upload:coin.pdf"}
    # the same bytes again: skipped, nothing rewritten
    again = _wait(
        app,
        app["writer"],
        _upload(app, app["writer"], "docs", [("coin.pdf", (DATA / "coin.pdf").read_bytes())]).json()["id"],
    )
    assert again["counts"]["skipped"] == 1 and again["state"] == "done"
    listing = httpx.get(f"{app['url']}/v1/collections/docs/documents", headers=_h(app["reader"]), timeout=30).json()
    assert listing["total"] == 1 and listing["documents"][0]["name"] == "coin.pdf"
    assert listing["documents"][0]["items"] == 11


def test_hostile_files_get_reasons_and_hurt_nothing_stored(app, tmp_path) -> None:
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb, optimize=True)  # 400 Mpx in a few hundred KB
    video = (DATA / "cup.mp4").read_bytes()
    files = [
        ("empty.pdf", b""),
        ("page.pdf", b"<!DOCTYPE html><html><body>not a pdf</body></html>"),
        ("truncated.mp4", video[: len(video) // 3]),
        ("bomb.png", bomb.read_bytes()),
        ("half.pdf", (DATA / "coin.pdf").read_bytes()[:30000]),
    ]
    r = _upload(app, app["writer"], "more", files)
    assert r.status_code == 202, r.text
    job = _wait(app, app["writer"], r.json()["id"])
    by_name = {f["name"]: f for f in job["files"]}
    assert set(by_name) == {n for n, _ in files}
    for name in ("empty.pdf", "page.pdf", "bomb.png"):
        assert by_name[name]["state"] == "failed" and by_name[name]["errors"], (name, by_name[name])
        assert all(e["reason"] for e in by_name[name]["errors"])
    assert "empty" in by_name["empty.pdf"]["errors"][0]["reason"]
    assert "HTML" in by_name["page.pdf"]["errors"][0]["reason"] or "html" in by_name["page.pdf"]["errors"][0]["reason"]
    # truncated files: whatever could be read is kept, every loss is reported
    for name in ("truncated.mp4", "half.pdf"):
        f = by_name[name]
        assert f["items"] > 0 or f["errors"], (name, f)
    # the earlier tenant's document is intact
    assert _search(app, app["reader"], "docs", "conditional inference")


def test_scopes_collections_and_limits(app) -> None:
    pdf = [("x.pdf", (DATA / "coin.pdf").read_bytes())]
    assert _upload(app, None, "docs", pdf).status_code == 401
    r = _upload(app, app["reader"], "docs", pdf)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = _upload(app, app["other"], "docs", pdf)  # not its collection: as if it did not exist
    assert r.status_code == 404
    r = _upload(app, app["writer"], "docs", [("big.pdf", b"%PDF-1.4\n" + b"0" * (LIMIT + 10))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = _upload(app, app["writer"], "docs", [("a.pdf", b"%PDF"), ("a.pdf", b"%PDF")])
    assert r.status_code == 400 and "two files named" in r.json()["error"]["message"]
    r = _upload(app, app["writer"], "Bad Name!", pdf)
    assert r.status_code in (400, 404)
    r = httpx.post(
        f"{app['url']}/v1/collections/docs/documents",
        json={"uris": ["/etc/passwd"]},
        headers=_h(app["writer"]),
        timeout=30,
    )
    assert r.status_code == 400 and "object-store" in r.json()["error"]["message"]
    r = httpx.post(
        f"{app['url']}/v1/collections/docs/documents",
        json={"uris": ["http://169.254.169.254/latest/meta-data"]},
        headers=_h(app["writer"]),
        timeout=30,
    )
    assert r.status_code == 400
    # another tenant cannot read a job
    job = _upload(app, app["writer"], "more", [("e.pdf", b"")]).json()
    assert httpx.get(f"{app['url']}/v1/jobs/{job['id']}", headers=_h(app["other"]), timeout=30).status_code == 404
    _wait(app, app["writer"], job["id"])


def test_concurrent_uploads_to_one_collection(app, tmp_path) -> None:
    import pymupdf

    def pdf(words: str) -> bytes:
        doc = pymupdf.open()
        for i in range(2):
            doc.new_page().insert_text((72, 72), f"{words} page {i}")
        return bytes(doc.tobytes())

    uploads = [(f"note{i}.pdf", pdf(f"zebra{i} giraffe{i} walrus{i}")) for i in range(3)]
    time.sleep(2.0)  # fresh routing stats (every 0.5 s here) after the jobs of the tests before
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda f: _upload(app, app["writer"], "more", [f]), uploads))
    assert all(r.status_code == 202 for r in responses)
    jobs = [_wait(app, app["writer"], r.json()["id"]) for r in responses]
    assert all(j["state"] == "done" and j["files"][0]["items"] == 2 for j in jobs), jobs
    # spread over both ingestion replicas (the router counts what it sent since their last report)
    assert len({j["replica"] for j in jobs}) == 2, [j["replica"] for j in jobs]
    for i in range(3):
        hits = _until_found(app, app["writer"], "more", f"zebra{i} walrus{i}")
        assert hits and hits[0]["source"] == f"upload:note{i}.pdf", hits[:2]


def test_deleted_documents_leave_search(app) -> None:
    listing = httpx.get(f"{app['url']}/v1/collections/more/documents?limit=2", headers=_h(app["writer"]), timeout=30)
    body = listing.json()
    assert body["next_offset"] == 2 and len(body["documents"]) == 2
    docs = {
        d["name"]: d
        for d in httpx.get(f"{app['url']}/v1/collections/more/documents", headers=_h(app["writer"]), timeout=30).json()[
            "documents"
        ]
    }
    target = docs["note0.pdf"]
    r = httpx.delete(
        f"{app['url']}/v1/collections/more/documents/{target['doc_id']}", headers=_h(app["reader"]), timeout=30
    )
    assert r.status_code == 404  # not the reader's collection
    t0 = time.time()
    r = httpx.delete(
        f"{app['url']}/v1/collections/more/documents/{target['doc_id']}", headers=_h(app["writer"]), timeout=60
    )
    assert r.status_code == 200 and r.json()["items"] == 2, r.text

    def still_there() -> bool:
        return any(h["source"] == "upload:note0.pdf" for h in _search(app, app["writer"], "more", "zebra0 walrus0"))

    deadline = time.time() + 30
    while time.time() < deadline and still_there():
        time.sleep(0.5)
    assert not still_there()
    print(f"delete to gone from search: {time.time() - t0:.1f} s")
    again = httpx.delete(
        f"{app['url']}/v1/collections/more/documents/{target['doc_id']}", headers=_h(app["writer"]), timeout=30
    )
    assert again.status_code == 404
    gone = httpx.delete(f"{app['url']}/v1/collections/more", headers=_h(app["writer"]), timeout=60)
    assert gone.status_code == 200 and gone.json()["documents"] >= 2
    left = httpx.get(f"{app['url']}/v1/collections/more/documents", headers=_h(app["writer"]), timeout=30).json()
    assert left["total"] == 0
    shutil.rmtree(app["dir"] / "unused", ignore_errors=True)


def test_mmrag_ingest_through_the_api(app, tmp_path) -> None:
    """`mmrag ingest --url` uploads a folder, follows the jobs and prints the usual summary."""
    import json
    import os

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(DATA / "coin.pdf", folder / "coin.pdf")
    (folder / "sub" / "coin.pdf").write_bytes((DATA / "coin.pdf").read_bytes())  # same name: one document per name
    (folder / "notes.txt").write_text("plain text is not a document type")
    env = {**os.environ, "MMRAG_API_KEY": app["writer"]}
    out = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "ingest", str(folder), "--url", app["url"], "-c", "cli", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["files"] == 1 and summary["pages"] == 11 and len(summary["jobs"]) == 1, summary
    reasons = {e["path"]: e["reason"] for e in summary["errors"]}
    assert any("notes.txt" in p for p in reasons) and any("same file name" in r for r in reasons.values()), reasons
    bad = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "ingest", str(folder / "coin.pdf"), "--url", app["url"], "-c", "docs"],
        capture_output=True,
        text=True,
        env={**env, "MMRAG_API_KEY": app["reader"]},
        timeout=120,
    )
    assert bad.returncode == 2 and "403" in bad.stderr


def test_a_job_killed_mid_way_runs_again_and_publishes_whole_documents(app) -> None:
    """SIGKILL-like: the Ingestor replica is killed while a job runs; Serve starts another, which finds the job and
    its staged files and runs it again; no document is ever visible half-written."""
    import ray

    video = (DATA / "cup.mp4").read_bytes()
    r = _upload(app, app["writer"], "docs", [("cup.mp4", video), ("coin2.pdf", (DATA / "coin.pdf").read_bytes())])
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    owner = r.json()["replica"]
    deadline = time.time() + 120
    while time.time() < deadline:
        state = httpx.get(f"{app['url']}/v1/jobs/{job_id}", headers=_h(app["writer"]), timeout=30).json()["state"]
        if state == "running":
            break
        time.sleep(0.1)
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "Ingestor" in a["name"] and a["name"].startswith("SERVE_REPLICA")
    ]
    assert len(names) == 2 and owner in names, (owner, names)
    ray.kill(ray.get_actor(owner, namespace="serve"), no_restart=True)
    # while the job is redone, the collection shows only whole documents
    seen_partial = []
    deadline = time.time() + 300
    job = None
    while time.time() < deadline:
        try:
            rj = httpx.get(f"{app['url']}/v1/jobs/{job_id}", headers=_h(app["writer"]), timeout=30)
            docs = httpx.get(f"{app['url']}/v1/collections/docs/documents", headers=_h(app["writer"]), timeout=30)
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if docs.status_code == 200:
            for d in docs.json()["documents"]:
                if d["name"] == "coin2.pdf" and d["items"] != 11:
                    seen_partial.append(d)
        if rj.status_code == 200 and rj.json()["state"] in ("done", "failed"):
            job = rj.json()
            break
        time.sleep(0.5)
    assert job is not None, "the killed job never finished"
    assert job["state"] == "done", job
    assert job["replica"] != owner  # the replica Serve started in its place adopted it; the other one did not
    assert {f["name"]: f["state"] for f in job["files"]} == {"cup.mp4": "done", "coin2.pdf": "done"}
    assert not seen_partial
    assert _until_found(app, app["reader"], "docs", "conditional inference")
    # whichever step the kill hit (before publishing, or between publishing and adding the text vectors), every
    # item with words to embed has its dense text vectors now
    from mmrag.store import LanceStore

    left = LanceStore(app["db"]).items_without_text_vectors("docs")
    assert left.num_rows == 0, left.to_pylist()


def test_ingestion_replicas_run_niced(app) -> None:
    """An ingestion replica's job thread and its models' thread pools run at ingestor.niceness (set once its models
    are loaded: searches on shared cores keep the CPU, a replica's start is not starved); Ray's own threads (the
    actor's event loop: uploads, job status, Serve's probes and routing stats) keep normal priority."""
    import os

    import ray

    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and "#Ingestor#" in a["name"]
    ]
    assert names
    for name in names:
        actor = ray.get_actor(name, namespace="serve")
        nice = ray.get(
            actor.__ray_call__.remote(
                lambda self: [os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")]
            ),
            timeout=60,
        )
        assert sum(n >= 10 for n in nice) >= 2 and min(nice) < 10, nice


def test_collections_are_created_listed_and_deleted(app) -> None:
    """POST /v1/collections makes an empty collection that searches answer (no 404) and lists show; a key may
    create only collections it names; DELETE removes it with its documents."""
    h = _h(app["writer"])
    r = httpx.post(f"{app['url']}/v1/collections", json={"name": "cli"}, headers=h, timeout=30)
    assert r.status_code in (200, 201), r.text
    assert r.json()["name"] == "cli"
    again = httpx.post(f"{app['url']}/v1/collections", json={"name": "cli"}, headers=h, timeout=30)
    assert again.status_code == 200  # already there: nothing changes
    listed = httpx.get(f"{app['url']}/v1/collections", headers=h, timeout=30).json()["collections"]
    assert "cli" in listed
    r = httpx.post(f"{app['url']}/v1/collections", json={"name": "docs"}, headers=_h(app["reader"]), timeout=30)
    assert r.status_code == 403
    r = httpx.post(f"{app['url']}/v1/collections", json={"name": "not-mine"}, headers=h, timeout=30)
    assert r.status_code == 404
    r = httpx.post(f"{app['url']}/v1/collections", json={"name": "a b"}, headers=h, timeout=30)
    assert r.status_code == 400
    fresh = httpx.post(f"{app['url']}/v1/collections", json={"name": "more"}, headers=h, timeout=30)
    assert fresh.status_code in (200, 201)
    deadline = time.time() + 10
    while time.time() < deadline:
        s = httpx.post(
            f"{app['url']}/v1/search", json={"query": "anything", "collection": "more"}, headers=h, timeout=30
        )
        if s.status_code == 200:
            break
        time.sleep(0.5)
    assert s.status_code == 200 and s.json()["results"] == []
    gone = httpx.delete(f"{app['url']}/v1/collections/more", headers=h, timeout=60)
    assert gone.status_code == 200
    listed = httpx.get(f"{app['url']}/v1/collections", headers=h, timeout=30).json()["collections"]
    assert "more" not in listed
