"""The gateway's document routes: add, list and delete documents over the API (ingestion as a service).

    POST   /v1/collections/{name}/documents      multipart files, or JSON {"uris": [...]} -> 202 + job
    GET    /v1/jobs/{job_id}                      the job: state, files, counts, per-file errors, timings
    GET    /v1/collections/{name}/documents      the collection's documents, paged (offset, limit)
    DELETE /v1/collections/{name}/documents/{doc_id}
    POST   /v1/collections                        {"name": ...}: an empty collection
    DELETE /v1/collections/{name}                 every document of the collection, and the collection

The work is done by the ``Ingestor`` deployment (:mod:`mmrag.serve.ingestor`); these routes check the caller and
the request and hand it over. Writing needs a key with the ``write`` scope (or no auth) for that collection; a
collection outside the key's is 404, as everywhere (a caller cannot learn which collections exist). A mixin of the
gateway class so that these routes share its FastAPI app, principal and store, in their own room.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from mmrag.auth import context
from mmrag.serve.api import api
from mmrag.serve.http_layer import ApiError, set_upload_limit
from mmrag.serve.schemas import ErrorResponse, error_json

DOC_ERRORS = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 429, 503)
}  # fmt: skip
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["files"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"uris": {"type": "array", "items": {"type": "string"}}},
                    "required": ["uris"],
                    "additionalProperties": False,
                }
            },
        },
    }
}
MAX_PAGE = 1000


def _cause(e: BaseException) -> str:
    """The message of an error raised in the ingestion replica (Ray wraps it with a traceback)."""
    cause = getattr(e, "cause", None)
    return str(cause if isinstance(cause, BaseException) else e).strip().splitlines()[-1]


class DocumentRoutes:
    cfg: Any
    store: Any
    ingestor: Any

    def _documents_setup(self) -> None:
        set_upload_limit(self.cfg.ingestor.max_upload_bytes)

    # ------------------------------------------------------------------------------ checks
    def _service(self) -> Any:
        if self.ingestor is None:
            raise ApiError(404, "not_found", "this server does not ingest over the API (ingestor.enabled is off)")
        return self.ingestor

    @staticmethod
    def _writable(collection: str) -> None:
        from mmrag.store import schema as S

        try:
            S.validate_collection(collection)
        except ValueError as e:
            raise ApiError(400, "invalid_request", str(e), "name") from e
        p = context.current()
        if not p.can_read(collection):
            raise ApiError(404, "not_found", f"no collection {collection}")
        if not p.has_scope("write"):
            raise ApiError(403, "forbidden", "this key may only read; adding or deleting documents needs scope write")
        context.note(collection=collection)

    @staticmethod
    def _readable(collection: str) -> None:
        if not context.current().can_read(collection):
            raise ApiError(404, "not_found", f"no collection {collection}")
        context.note(collection=collection)

    # ------------------------------------------------------------------------------ routes
    @api.post(
        "/v1/collections/{name}/documents",
        status_code=202,
        responses={202: {"description": "the job, queued"}, **DOC_ERRORS},
        openapi_extra=UPLOAD_BODY,
    )
    async def add_documents(self, name: str, request: Request) -> JSONResponse:
        """Add files to a collection: a multipart upload (field ``files``, one or more) or ``{"uris": [...]}`` naming
        object-store files under the prefixes the operator allowed. Answers 202 with the job at once; ``GET
        /v1/jobs/{id}`` follows it. A file whose name is already a document of the collection replaces it (the same
        bytes again are skipped)."""
        from mmrag.serve.ingestor import IngestorBusy, UploadError

        service = self._service()
        self._writable(name)
        ctype = request.headers.get("content-type", "")
        key_id = context.current().key_id
        try:
            if ctype.startswith("multipart/form-data"):
                files = await self._files(request)
                job = await service.submit_files.remote(name, files, key_id)
            elif ctype.split(";")[0].strip() == "application/json":
                job = await service.submit_uris.remote(name, await self._uris(request), key_id)
            else:
                raise ApiError(
                    415 if ctype else 400,
                    "unsupported_media_type",
                    'send multipart/form-data with files, or application/json with {"uris": [...]}',
                )
        except UploadError as e:
            raise ApiError(400, "invalid_request", _cause(e), "files") from e
        except IngestorBusy as e:
            return JSONResponse(error_json("overloaded", _cause(e)), status_code=503, headers={"Retry-After": "5"})
        return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    async def _files(self, request: Request) -> list[tuple[str, bytes]]:
        limit = self.cfg.ingestor.max_files
        try:
            form = await request.form(max_files=limit, max_fields=limit + 8)
        except Exception as e:  # starlette's MultiPartException and malformed bodies
            raise ApiError(400, "invalid_request", f"the multipart body could not be read: {e}", "files") from e
        try:
            uploads = form.getlist("files")
            if not uploads or any(isinstance(u, str) for u in uploads):
                raise ApiError(400, "invalid_request", "send the files as multipart file parts named 'files'", "files")
            return [(u.filename or "", await u.read()) for u in uploads]  # type: ignore[union-attr]
        finally:
            await form.close()

    @staticmethod
    async def _uris(request: Request) -> list[str]:
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            raise ApiError(400, "invalid_request", "the body is not valid JSON", "uris") from e
        if not isinstance(body, dict) or set(body) != {"uris"} or not isinstance(body["uris"], list):
            raise ApiError(400, "invalid_request", 'the body must be {"uris": ["s3://...", ...]}', "uris")
        if not all(isinstance(u, str) for u in body["uris"]):
            raise ApiError(400, "invalid_request", "every uri must be a string", "uris")
        return body["uris"]

    @api.get("/v1/jobs/{job_id}", responses=DOC_ERRORS)
    async def get_job(self, job_id: str) -> dict[str, Any]:
        """An ingestion job: ``state`` (queued, waiting, running, done, failed), each file's state, items and errors,
        the counts so far and the stage timings."""
        service = self._service()
        job = await self.retries.call("ingestor.job", lambda: service.job.remote(job_id)) if len(job_id) <= 64 else None
        if job is None or not context.current().can_read(job["collection"]):
            raise ApiError(404, "not_found", f"no job {job_id}")
        context.note(collection=job["collection"])
        return job

    @api.get("/v1/collections/{name}/documents", responses=DOC_ERRORS)
    async def list_documents(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """A collection's documents in name order, ``limit`` (at most 1000) from ``offset``."""
        from mmrag.serve.ingestor import shown_name

        self._readable(name)
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "invalid_request", f"offset >= 0 and 1 <= limit <= {MAX_PAGE}", "limit")
        docs = await asyncio.to_thread(self.store.unscoped.documents, name)
        docs.sort(key=lambda d: d["source_uri"])
        page = [
            {
                "doc_id": d["doc_id"],
                "name": shown_name(d["source_uri"]),
                "kind": d.get("kind"),
                "items": d.get("n_items"),
                "errors": d.get("n_errors"),
                "ingested_at": d["ingested_at"].isoformat() if d.get("ingested_at") else None,
            }
            for d in docs[offset : offset + limit]
        ]
        nxt = offset + limit if offset + limit < len(docs) else None
        return {"collection": name, "total": len(docs), "offset": offset, "next_offset": nxt, "documents": page}

    @api.delete("/v1/collections/{name}/documents/{doc_id}", responses=DOC_ERRORS)
    async def delete_document(self, name: str, doc_id: str) -> dict[str, Any]:
        """Delete one document (all its pages or clips); it leaves search within the index refresh interval."""
        service = self._service()
        self._writable(name)
        if not (len(doc_id) <= 64 and doc_id.isalnum()):
            raise ApiError(400, "invalid_request", "not a document id", "doc_id")
        out = await service.delete_document.remote(name, doc_id)
        if out is None:
            raise ApiError(404, "not_found", f"no document {doc_id} in {name}")
        return out  # type: ignore[no-any-return]

    @api.post(
        "/v1/collections",
        status_code=201,
        responses={200: {"description": "it existed already"}, **DOC_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "required": ["name"],
                            "additionalProperties": False,
                        }
                    }
                },
            }
        },
    )
    async def create_collection(self, request: Request) -> JSONResponse:
        """Create an empty collection (searches of it answer, with no results, until documents arrive); 201, or 200
        when it existed. A key may create only collections it names."""
        service = self._service()
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            raise ApiError(400, "invalid_request", "the body is not valid JSON", "name") from e
        if not isinstance(body, dict) or set(body) != {"name"} or not isinstance(body["name"], str):
            raise ApiError(400, "invalid_request", 'the body must be {"name": "..."}', "name")
        name = body["name"]
        self._writable(name)
        created = await service.create_collection.remote(name)
        return JSONResponse({"name": name, "created": created}, status_code=201 if created else 200)

    @api.delete("/v1/collections/{name}", responses=DOC_ERRORS)
    async def delete_collection(self, name: str) -> dict[str, Any]:
        """Delete every document of a collection, and its calibration."""
        service = self._service()
        self._writable(name)
        return await service.delete_collection.remote(name)  # type: ignore[no-any-return]


__all__ = ["DocumentRoutes"]
