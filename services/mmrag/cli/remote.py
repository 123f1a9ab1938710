"""``mmrag ingest --url URL``: add files to a running server through its API, with a progress bar.

Local files are uploaded (multipart, in requests that stay under the server's limits: ``--batch-bytes`` and
``--batch-files``), object-store URIs are sent by name (the server must allow their prefix); each request becomes a
job on the server, followed with ``GET /v1/jobs/{id}`` until it ends. The summary has the same shape as a local
``mmrag ingest``'s. The key comes from ``--key`` or ``MMRAG_API_KEY``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ENV_KEY = "MMRAG_API_KEY"
POLL_S = 0.5


class RemoteError(RuntimeError):
    """The server refused a request (the message is its error)."""


def _batches(files: list[tuple[str, int]], max_bytes: int, max_files: int) -> Iterator[list[tuple[str, int]]]:
    batch: list[tuple[str, int]] = []
    size = 0
    for path, n in files:
        if batch and (size + n > max_bytes or len(batch) >= max_files):
            yield batch
            batch, size = [], 0
        batch.append((path, n))
        size += n
    if batch:
        yield batch


def _raise(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        err = r.json()["error"]
        msg = f"{r.status_code} {err['code']}: {err['message']}"
    except Exception:
        msg = f"{r.status_code}: {r.text[:300]}"
    raise RemoteError(msg)


def ingest_via_api(
    paths: list[str],
    url: str,
    collection: str,
    *,
    key: str | None = None,
    batch_bytes: int = 64 * 1024**2,
    batch_files: int = 32,
    follow_symlinks: bool = False,
    progress: Callable[[dict[str, int]], None] | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Upload ``paths`` (files, folders, globs, object-store URIs) into ``collection`` of the server at ``url``;
    the combined summary of its jobs: files, pages, images, clips, skipped, errors, jobs."""
    from mmrag.ingest import sources

    key = key or os.environ.get(ENV_KEY)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    remote = [p for p in paths if "://" in p and not p.startswith("file://")]
    local = [p for p in paths if p not in remote]
    files, problems = sources.expand(local, follow_symlinks=follow_symlinks) if local else ([], [])
    summary: dict[str, Any] = {
        "files": 0,
        "pages": 0,
        "images": 0,
        "clips": 0,
        "skipped": 0,
        "errors": [{"path": p.uri, "reason": p.reason} for p in problems],
        "jobs": [],
    }
    seen: dict[str, str] = {}
    unique = []
    for f in files:  # the server keeps one document per file name in a collection
        name = Path(f.uri).name
        if name in seen:
            summary["errors"].append(
                {"path": f.shown, "reason": f"same file name as {seen[name]}; a collection holds one document per name"}
            )
            continue
        seen[name] = f.shown
        unique.append(f)
    files = unique
    total = len(files) + len(remote)
    done_counts = {
        "files": 0,
        "files_total": total,
        "pages": 0,
        "images": 0,
        "clips": 0,
        "errors": len(summary["errors"]),
    }
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    base = url.rstrip("/") + f"/v1/collections/{collection}/documents"
    try:
        requests: list[tuple[str, Any]] = []
        for batch in _batches([(f.uri, f.size) for f in files], batch_bytes, batch_files):
            requests.append(("files", batch))
        if remote:
            requests.append(("uris", remote))
        shown = {f.uri: f.shown for f in files}
        for kind, batch in requests:
            if kind == "files":
                handles = [open(p, "rb") for p, _ in batch]  # noqa: SIM115 - closed below, after the upload
                try:
                    parts = [
                        ("files", (Path(p).name, h, "application/octet-stream"))
                        for (p, _), h in zip(batch, handles, strict=True)
                    ]
                    r = http.post(base, files=parts, headers=headers)
                finally:
                    for h in handles:
                        h.close()
            else:
                r = http.post(base, json={"uris": batch}, headers=headers)
            _raise(r)
            job = _follow(http, url, r.json()["id"], headers, done_counts, progress)
            summary["jobs"].append(job["id"])
            _add(summary, job, shown if kind == "files" else {})
            done_counts["files"] += len(batch)
            if progress:
                progress(dict(done_counts))
    finally:
        if own:
            http.close()
    return summary


def _follow(
    http: httpx.Client,
    url: str,
    job_id: str,
    headers: dict[str, str],
    before: dict[str, int],
    progress: Callable[[dict[str, int]], None] | None,
) -> dict[str, Any]:
    while True:
        r = http.get(url.rstrip("/") + f"/v1/jobs/{job_id}", headers=headers)
        _raise(r)
        job = r.json()
        if progress:
            c = job.get("counts", {})
            progress({k: before[k] + (c.get(k, 0) if k != "files_total" else 0) for k in before})
        if job["state"] in ("done", "failed"):
            for k in ("pages", "images", "clips", "errors"):
                before[k] += job.get("counts", {}).get(k, 0)
            return job
        time.sleep(POLL_S)


def _add(summary: dict[str, Any], job: dict[str, Any], shown: dict[str, str]) -> None:
    by_name = {Path(uri).name: given for uri, given in shown.items()}
    c = job.get("counts", {})
    for k in ("pages", "images", "clips", "skipped"):
        summary[k] += int(c.get(k, 0) or 0)
    summary["files"] += sum(1 for f in job["files"] if f["state"] == "done")
    for f in job["files"]:
        for e in f.get("errors", []):
            summary["errors"].append({"path": by_name.get(f["name"], f["name"]), **e})
    if job["state"] == "failed" and job.get("message") and not any(f.get("errors") for f in job["files"]):
        summary["errors"].append({"path": job["id"], "reason": job["message"]})


__all__ = ["ENV_KEY", "RemoteError", "ingest_via_api"]
