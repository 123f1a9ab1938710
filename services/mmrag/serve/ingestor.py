"""Ingestion service deployment: uploads and deletes over the API, searchable seconds after they arrive.

The gateway's document routes (:mod:`mmrag.serve.documents`) hand each upload to an ``Ingestor`` replica: the
files' bytes are staged on the replica's disk (``ingestor.staging_dir``), a job is recorded (table
``ingest_jobs``, :mod:`mmrag.store.jobs`) and queued, and the call returns at once with the job. One worker thread
per replica runs the queue in order through :func:`mmrag.ingest.pipeline.ingest` with :class:`WarmStages` (the
reader, encoder and text encoder loaded once at start) instead of Ray Data's actor pools: the same reading,
embedding and publishing code as ``mmrag ingest``, without its ~30 s start-up.

Safety is the pipeline's: rows are written invisible and a document is published only once all its rows are in,
so a replica killed at any point leaves no partial document. A job reads and embeds its files first and takes the
store's writer lease (:mod:`mmrag.store.lease`) only to write and publish them (and again to merge their text
vectors), so several replicas embed at once and take turns only to write, with each other and with ``mmrag
ingest`` (a job waits, state ``waiting``, while another writer holds the store). Uploads are routed to the replica
holding the fewest jobs, and the deployment autoscales on the jobs its replicas hold
(:mod:`mmrag.serve.ingest_scaling`). A job that was queued or running when its replica stopped is
run again when a replica starts and finds its staged files; otherwise it is marked failed ("upload again").

Deletes go through the same queue, ahead of waiting uploads, so a delete never races a job's publishing.

By default (``ingestor.text_after_publish``) a job publishes its documents once the visual model embedded them and
adds their dense text vectors right after (the slowest stage on a CPU): an upload is searchable by keywords and
pictures seconds sooner. A replica that stops between the two fills the missing vectors when it starts again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import logging
import os
import queue
import re
import shutil
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

from ray import serve

from mmrag import constants
from mmrag.config import MmragConfig

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "upload:"
MAX_NAME_BYTES = 255
#: queue priorities: deletes before uploads
_DELETE, _JOB = 0, 1
#: a running job's record is written to the store at most this often
SAVE_EVERY_S = 1.0


class UploadError(ValueError):
    """An upload refused before anything was stored (the gateway answers it 400)."""


class IngestorBusy(RuntimeError):
    """The replica's job queue is full (the gateway answers it 503 with Retry-After)."""


def upload_name(raw: str) -> str:
    """The document name of an uploaded file: its base name (no folders), NFC, no control characters."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", "..") or any(unicodedata.category(c)[0] == "C" for c in name):
        raise UploadError(f"file name {raw!r} is not usable: give each file a plain name (no control characters)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UploadError(f"file name {name[:40]!r}... is over {MAX_NAME_BYTES} bytes")
    return name


def shown_name(source_uri: str) -> str:
    """How a document is named to API users: an upload by its file name, anything else by its URI."""
    return source_uri[len(UPLOAD_PREFIX) :] if source_uri.startswith(UPLOAD_PREFIX) else source_uri


def _disk_name(name: str) -> str:
    """A name safe on any file system for a staged copy (the document keeps the real name)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-80:].lstrip(".") or "file"
    return f"{hashlib.sha256(name.encode()).hexdigest()[:8]}-{stem}"


@serve.deployment(name=constants.INGESTOR_DEPLOYMENT)
class Ingestor:
    def __init__(self, config: dict[str, Any], *, start_worker: bool = True) -> None:
        from mmrag.ingest.warm import WarmStages
        from mmrag.store import LanceStore
        from mmrag.store.jobs import JobBook

        ray_threads = _thread_ids()  # Ray's own (the actor's event loop, gRPC): they keep normal priority
        self.cfg = MmragConfig.model_validate(config)
        self.icfg = self.cfg.ingestor
        self.store = LanceStore.from_config(self.cfg.store)
        self.book = JobBook(self.store)
        self.staging = Path(self.icfg.staging_dir or constants.mmrag_home() / "uploads")
        self.staging.mkdir(parents=True, exist_ok=True)
        self.stages = WarmStages(self.cfg)
        self.jobs: dict[str, dict[str, Any]] = {}
        self._queue: queue.PriorityQueue[tuple[int, int, str, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._pending = 0  # jobs queued, waiting or running on this replica
        self._received = 0  # submit calls since start (the router counts its sends beyond this)
        self._wrote_since_optimize = 0
        self._lock = threading.Lock()
        self.replica = _replica_name()
        self._resume()
        if self.stages.text is not None:  # first: documents a stopped job published before their text vectors
            self._queue.put((_DELETE, next(self._seq), "fill", None))
        if self.icfg.niceness:
            # the threads the models and the store started (OpenMP's and LanceDB's pools), once loaded; the job
            # thread lowers itself (_work) and what it starts inherits it. A niced job thread alone left its OpenMP
            # pool at normal priority; niced before loading, a replica started under full search load (a redeploy)
            # took 450 s (benchmarks/results/faults.md); with Ray's own threads niced too, Serve's queue-length
            # probes and routing stats missed their deadlines while a job ran, and uploads piled on the other replica
            _nice_process(self.icfg.niceness, skip=ray_threads)
        self.worker = threading.Thread(target=self._work, name="mmrag-ingestor", daemon=True)
        if start_worker:
            self.worker.start()

    # ------------------------------------------------------------------------------ calls from the gateway
    async def submit_files(
        self, collection: str, files: list[tuple[str, bytes]], key_id: str | None = None
    ) -> dict[str, Any]:
        """Stage ``files`` (name, bytes) and queue a job for them; the queued job's record."""
        from mmrag.store import schema as S
        from mmrag.store.jobs import new_job

        self._count_received()
        S.validate_collection(collection)
        if not files:
            raise UploadError("no files in the upload")
        if len(files) > self.icfg.max_files:
            raise UploadError(f"{len(files)} files in one upload; at most {self.icfg.max_files} (ingestor.max_files)")
        names = [upload_name(n) for n, _ in files]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise UploadError(f"two files named {dup!r} in one upload: a collection holds one document per name")
        self._admit()
        job = new_job(
            collection, [{"name": n, "bytes": len(b)} for n, (_, b) in zip(names, files, strict=True)], key_id
        )
        folder = self.staging / job["id"]
        try:
            await asyncio.to_thread(self._stage, folder, names, [b for _, b in files])
        except OSError:
            self._release()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job["staged"] = str(folder)
        return await asyncio.to_thread(self._enqueue, job)

    async def submit_uris(self, collection: str, uris: list[str], key_id: str | None = None) -> dict[str, Any]:
        """Queue a job for object-store URIs under ``ingestor.allowed_uri_prefixes`` (checked here, again)."""
        from mmrag.store import schema as S
        from mmrag.store.jobs import new_job

        self._count_received()
        S.validate_collection(collection)
        if not uris:
            raise UploadError("no uris given")
        if len(uris) > self.icfg.max_files:
            raise UploadError(f"{len(uris)} uris in one request; at most {self.icfg.max_files} (ingestor.max_files)")
        for u in uris:
            check_uri(u, self.icfg.allowed_uri_prefixes)
        self._admit()
        job = new_job(collection, [{"name": u, "bytes": None} for u in uris], key_id)
        job["uris"] = list(uris)
        return await asyncio.to_thread(self._enqueue, job)

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """A job of this replica, or from the store (another replica's, or an earlier run's)."""
        with self._lock:
            mine = self.jobs.get(job_id)
            if mine is not None:
                return _public(mine)
        found = await asyncio.to_thread(self.book.get, job_id)
        return _public(found) if found else None

    async def delete_document(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        """Delete one document (by its id) once the jobs ahead of it finish writing; None when there is none."""
        return await self._call(_DELETE, ("document", collection, doc_id))

    async def create_collection(self, collection: str) -> bool:
        """Record an empty collection (through the queue, like every write); False when it existed."""
        return bool(await self._call(_DELETE, ("create", collection, None)))

    async def delete_collection(self, collection: str) -> dict[str, Any]:
        """Delete every document of a collection (and its calibration)."""
        out = await self._call(_DELETE, ("collection", collection, None))
        assert out is not None
        return out

    # ------------------------------------------------------------------------------ load, for routing and scaling
    def _jobs_held(self) -> dict[str, float]:
        from mmrag.serve.ingest_scaling import JOBS_METRIC, RECEIVED

        with self._lock:
            return {JOBS_METRIC: float(self._pending), RECEIVED: float(self._received)}

    def _count_received(self) -> None:
        with self._lock:
            self._received += 1

    def record_routing_stats(self) -> dict[str, float]:
        """Serve's router asks each replica for this (FewestJobsRouter sends uploads to the fewest jobs)."""
        return self._jobs_held()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's autoscaler asks each replica for this (jobs_autoscaling_policy sizes the deployment by jobs)."""
        return self._jobs_held()

    def check_health(self) -> None:
        if self.worker.ident is not None and not self.worker.is_alive():
            raise RuntimeError("the ingestion worker thread died")

    # ------------------------------------------------------------------------------ queue
    def _admit(self) -> None:
        with self._lock:
            if self._pending >= self.icfg.max_pending_jobs:
                raise IngestorBusy(f"{self._pending} ingestion jobs are waiting on this replica; retry later")
            self._pending += 1

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    @staticmethod
    def _stage(folder: Path, names: list[str], blobs: list[bytes]) -> None:
        folder.mkdir(parents=True, exist_ok=False)
        for name, blob in zip(names, blobs, strict=True):
            (folder / _disk_name(name)).write_bytes(blob)

    def _enqueue(self, job: dict[str, Any]) -> dict[str, Any]:
        job["replica"] = self.replica  # the replica whose queue and staging dir hold it
        with self._lock:
            self.jobs[job["id"]] = job
        self.book.save(job)
        self._queue.put((_JOB, next(self._seq), "job", job["id"]))
        return _public(job)

    async def _call(self, prio: int, payload: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((prio, next(self._seq), "delete", (payload, fut)))
        return await asyncio.wrap_future(fut)

    def _resume(self) -> None:
        """Jobs left queued or running by a stopped replica: run again if their files are still staged. Jobs of
        replicas still running are theirs (this replica may be one autoscaling just added)."""
        try:
            left = self.book.unfinished()
        except Exception:
            log.exception("reading unfinished ingestion jobs failed")
            return
        alive = _live_replicas()
        for job in left:
            owner = job.get("replica")
            if owner and owner != self.replica and (alive is None or owner in alive):
                continue
            job["replica"] = self.replica
            staged = job.get("staged")
            if job.get("uris") or (staged and Path(staged).is_dir()):
                job.update(state="queued", message="resumed after the ingestion service restarted")
                with self._lock:
                    self.jobs[job["id"]] = job
                    self._pending += 1
                self._queue.put((_JOB, next(self._seq), "job", job["id"]))
            else:
                job.update(
                    state="failed",
                    finished_at=_now(),
                    message="the ingestion service stopped before this job ran and its files are gone: upload again",
                )
            self.book.save(job)

    def _work(self) -> None:
        if self.icfg.niceness:
            _nice_process(self.icfg.niceness, only=threading.get_native_id())
        while True:
            _, _, kind, payload = self._queue.get()
            try:
                if kind == "job":
                    self._run(payload)
                elif kind == "fill":
                    self._fill_text()
                else:
                    what, fut = payload
                    try:
                        fut.set_result(self._delete(*what))
                    except Exception as e:
                        fut.set_exception(e)
            except Exception:
                log.exception("ingestion worker: %s failed", kind)

    # ------------------------------------------------------------------------------ running a job
    def _run(self, job_id: str) -> None:
        from mmrag.ingest.pipeline import ingest
        from mmrag.store.lease import LeaseHeldError

        with self._lock:
            job = self.jobs[job_id]
        t0 = time.perf_counter()
        job.update(state="running", started_at=_now())
        self.book.save(job)
        inputs, names = self._inputs(job)
        last = [0.0]

        def progress(counts: dict[str, int]) -> None:
            with self._lock:
                job["counts"] = dict(counts)
                if job["state"] == "waiting":  # the writer lease is ours now
                    job.update(state="running", message=None)
            if time.monotonic() - last[0] >= SAVE_EVERY_S:
                last[0] = time.monotonic()
                self.book.save(job)

        def wait(message: str) -> float:
            """Embedded, waiting for another writer (another replica's job, mmrag ingest) to finish writing."""
            with self._lock:
                job.update(state="waiting", message=message)
            self.book.save(job)
            return self.icfg.retry_wait_s

        try:
            while True:
                try:
                    deferred = self.icfg.text_after_publish and self.stages.text is not None
                    summary = ingest(
                        inputs,
                        self.cfg,
                        collection=job["collection"],
                        store=self.store,
                        progress=progress,
                        calibrate=self.icfg.calibrate,
                        runner=self.stages.without_text if deferred else self.stages,
                        names=names,
                        optimize=False,
                        text_after_publish=self.stages.text if deferred else None,
                        lease_wait=wait,
                    )
                    break
                except LeaseHeldError as e:
                    job.update(state="waiting", message=str(e))
                    self.book.save(job)
                    time.sleep(self.icfg.retry_wait_s)
                    job.update(state="running", message=None)
            self._finish(job, summary.to_dict(), names)
            if summary.documents:
                self._wrote_since_optimize += 1
        except Exception as e:
            log.exception("ingestion job %s failed", job_id)
            job.update(state="failed", message=f"{type(e).__name__}: {e}")
            for f in job["files"]:
                if f["state"] not in ("done", "failed"):
                    f["state"] = "failed"
        job["finished_at"] = _now()
        job["timings"]["run_s"] = round(time.perf_counter() - t0, 3)
        self.book.save(job)
        self._release()
        if job.get("staged"):
            shutil.rmtree(job["staged"], ignore_errors=True)
        self._maybe_optimize()

    def _fill_text(self) -> None:
        """Dense text vectors for published items that have none (a job stopped between publishing and adding
        them; they were searchable by keywords and pictures meanwhile)."""
        from mmrag.ingest.pipeline import fill_text_vectors
        from mmrag.store.lease import LeaseHeldError, WriterLease

        try:
            with WriterLease.from_config(self.store, self.cfg.store.writer, purpose="ingestion service text") as lease:
                n = fill_text_vectors(self.store, self.stages.text, lease=lease)  # type: ignore[arg-type]
            if n:
                log.info("added the dense text vectors of %d items published without them", n)
        except LeaseHeldError:
            log.info("another writer holds the store; items without text vectors are filled at the next start")
        except Exception:
            log.exception("adding missing text vectors failed")

    def _inputs(self, job: dict[str, Any]) -> tuple[list[str], dict[str, str] | None]:
        if job.get("uris"):
            return list(job["uris"]), None
        folder = Path(job["staged"])
        names = {}
        for f in job["files"]:
            path = os.path.realpath(folder / _disk_name(f["name"]))
            names[path] = UPLOAD_PREFIX + f["name"]
        return list(names), names

    def _finish(self, job: dict[str, Any], summary: dict[str, Any], names: dict[str, str] | None) -> None:
        """Per-file outcome from the run's summary and the store's document records."""
        by_name = {f["name"]: f for f in job["files"]}
        ident = (lambda n: UPLOAD_PREFIX + n) if names else (lambda n: n)
        for err in summary["errors"]:
            name = shown_name(err["path"])
            f = by_name.get(name)
            if f is not None:
                f["errors"].append({k: v for k, v in err.items() if k != "path"})
            job["errors"].append({**err, "path": name})
        docs = {d["source_uri"]: d for d in self.store.documents(job["collection"])}
        for f in job["files"]:
            d = docs.get(ident(f["name"]))
            if d is not None:
                f["items"] = int(d.get("n_items") or 0)
                f["doc_id"] = d.get("doc_id")
            if f["errors"] and not f["items"]:
                f["state"] = "failed"
            else:
                f["state"] = "done" if d is not None else "failed"
        job["counts"]["skipped"] = summary["skipped"]
        job["timings"].update({k: round(v, 3) for k, v in summary["stage_seconds"].items()})
        job["calibration"] = summary.get("calibration")
        failed = all(f["state"] == "failed" for f in job["files"])
        job["state"] = "failed" if failed else "done"
        if failed:
            job["message"] = "no file of this job could be ingested; see each file's errors"

    def _maybe_optimize(self) -> None:
        every = self.icfg.optimize_every_jobs
        if not every or self._wrote_since_optimize < every or not self._queue.empty():
            return
        from mmrag.store.lease import LeaseHeldError, WriterLease

        try:
            with WriterLease.from_config(
                self.store, self.cfg.store.writer, purpose="ingestion service optimize"
            ) as lease:
                self.store.optimize(keep_versions_s=self.cfg.store.writer.keep_versions_s, lease=lease)
            self._wrote_since_optimize = 0
        except LeaseHeldError:
            pass  # another writer is busy: next time
        except Exception:
            log.exception("optimizing the store after ingestion jobs failed")

    def _delete(self, what: str, collection: str, doc_id: str | None) -> dict[str, Any] | bool | None:
        """A write that is not an upload (create, delete a document or a collection), under the writer lease."""
        from mmrag.store.lease import LeaseHeldError, WriterLease

        while True:
            try:
                lease = WriterLease.from_config(self.store, self.cfg.store.writer, purpose="API delete").acquire()
                break
            except LeaseHeldError:
                time.sleep(self.icfg.retry_wait_s)
        with lease:
            if what == "create":
                return self.store.create_collection(collection)  # type: ignore[return-value]
            docs = [d for d in self.store.documents(collection) if what == "collection" or d["doc_id"] == doc_id]
            if what == "document" and not docs:
                return None
            items = 0
            for d in docs:
                lease.ensure_held()
                items += self.store.delete_document(collection, d["source_uri"])
            if what == "collection":
                self.store.forget_collection(collection)
        return {"collection": collection, "documents": len(docs), "items": items}


def _thread_ids() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _nice_process(niceness: int, *, skip: set[int] = frozenset(), only: int | None = None) -> None:  # type: ignore[assignment]
    """Lower this process's threads (all but ``skip``, or ``only`` one) to ``niceness`` (Linux nices threads one by
    one; threads started later inherit their creator's). Never raises: on another OS, or without permission, the
    replica keeps its priority."""
    tids = [only] if only is not None else sorted(_thread_ids() - skip) or [threading.get_native_id()]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except (OSError, AttributeError):
            log.warning("cannot lower the ingestion replica's priority", exc_info=True)
            return


def _replica_name() -> str:
    """This replica's Serve actor name (SERVE_REPLICA::app#deployment#id); a placeholder outside Serve (tests)."""
    try:
        return str(serve.get_replica_context().replica_id.to_full_id_str())
    except Exception:
        return f"local-{os.getpid()}"


def _live_replicas() -> set[str] | None:
    """Names of the Serve replica actors alive now, or None when Ray cannot say (then every job is adopted)."""
    try:
        import ray

        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == "serve"}
    except Exception:
        log.warning("cannot list the running replicas; adopting every unfinished ingestion job", exc_info=True)
        return None


def check_uri(uri: str, allowed: list[str]) -> None:
    """Refuse anything but an object-store URI under an allow-listed prefix (no local paths, no http(s): SSRF)."""
    if not isinstance(uri, str) or "://" not in uri or any(unicodedata.category(c)[0] == "C" for c in uri):
        raise UploadError(f"{uri!r} is not an object-store URI (e.g. s3://bucket/key)")
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("http", "https", "file", "ftp"):
        raise UploadError(f"{scheme} URIs are not accepted: upload the file, or name it in an allowed object store")
    if ".." in uri.split("://", 1)[1].split("/"):
        raise UploadError(f"{uri!r}: '..' is not allowed in a URI")
    if not any(uri.startswith(p) for p in allowed):
        raise UploadError(
            f"{uri!r} is not under a prefix the operator allowed (ingestor.allowed_uri_prefixes)"
            if allowed
            else "this server accepts no URIs (ingestor.allowed_uri_prefixes is empty): upload the files instead"
        )


def _public(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it (no staging path)."""
    out = {k: v for k, v in job.items() if k not in ("staged",)}
    out["files"] = [dict(f) for f in job["files"]]
    return out


def _now() -> str:
    from mmrag.store.jobs import now_iso

    return now_iso()


__all__ = ["Ingestor", "IngestorBusy", "UploadError", "check_uri", "shown_name", "upload_name"]
