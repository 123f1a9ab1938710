"""Ingestion jobs of the API, kept in the store so any gateway replica can answer ``GET /v1/jobs/{id}``.

One row per job in the table ``ingest_jobs``: its id, collection, the key that submitted it, its state, and the
whole record as JSON (files, counts, errors, timings: :func:`new_job` shows the shape). The ingestion service
writes a job's row when it is queued, when it starts, every second or so while it runs, and when it ends (one
``merge_insert`` on ``job_id`` each); only the service writes here.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pyarrow as pa

JOBS = "ingest_jobs"
JOBS_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("collection", pa.string(), nullable=False),
        pa.field("key_id", pa.string()),
        pa.field("state", pa.string(), nullable=False),
        pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("record", pa.string(), nullable=False),
    ]
)
#: queued -> running -> done | failed; "waiting" while another writer holds the store.
STATES = ("queued", "waiting", "running", "done", "failed")
FINAL = ("done", "failed")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def new_job(collection: str, files: list[dict[str, Any]], key_id: str | None) -> dict[str, Any]:
    """A queued job. ``files``: one dict per file with at least ``name`` (what the user called it) and ``bytes``."""
    return {
        "id": "job_" + uuid.uuid4().hex[:20],
        "collection": collection,
        "key_id": key_id,
        "state": "queued",
        "created_at": now_iso(),
        "started_at": None,
        "finished_at": None,
        "files": [{**f, "state": "queued", "items": 0, "errors": []} for f in files],
        "counts": {"files": 0, "files_total": len(files), "pages": 0, "images": 0, "clips": 0, "audio": 0, "errors": 0},
        "errors": [],
        "timings": {},
        "message": None,
    }


class JobBook:
    def __init__(self, store: Any) -> None:
        self.store = store

    def _table(self) -> Any:
        return self.store.ensure_table(JOBS, JOBS_SCHEMA)

    def save(self, job: dict[str, Any]) -> None:
        row = {
            "job_id": job["id"],
            "collection": job["collection"],
            "key_id": job.get("key_id"),
            "state": job["state"],
            "updated_at": dt.datetime.now(dt.UTC),
            "record": json.dumps(job, default=str),
        }
        (
            self._table()
            .merge_insert("job_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist([row], schema=JOBS_SCHEMA))
        )

    def get(self, job_id: str) -> dict[str, Any] | None:
        from lancedb.expr import col, lit

        if not self.store.has_table(JOBS):
            return None
        t = self.store.table(JOBS)
        t.checkout_latest()
        rows = t.search().where((col("job_id") == lit(job_id)).to_sql()).limit(1).to_list()
        return json.loads(rows[0]["record"]) if rows else None

    def unfinished(self) -> list[dict[str, Any]]:
        """Jobs that were queued or running when their service stopped."""
        from lancedb.expr import col, lit

        if not self.store.has_table(JOBS):
            return []
        cond = None
        for s in STATES:
            if s in FINAL:
                continue
            c = col("state") == lit(s)
            cond = c if cond is None else cond | c
        rows = self.store.table(JOBS).search().where(cond.to_sql()).limit(None).to_list()
        return sorted((json.loads(r["record"]) for r in rows), key=lambda j: j["created_at"])


__all__ = ["FINAL", "JOBS", "JOBS_SCHEMA", "STATES", "JobBook", "new_job", "now_iso"]
