"""The gateway's item routes: ``GET /v1/items/{item_id}`` and its image, thumbnail, frames, source video and
evidence view.

Every read goes through the gateway's :class:`~mmrag.store.scoped.ScopedStore`: an item in a collection outside the
caller's key is 404, as everywhere. A mixin of the gateway class, so that the routes share its FastAPI app, principal,
store and retriever (for the evidence regions).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from mmrag.auth import context
from mmrag.serve import media
from mmrag.serve.api import ERRORS, api
from mmrag.serve.http_layer import ApiError
from mmrag.serve.schemas import ItemInfo

ITEM_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class ItemRoutes:
    cfg: Any
    store: Any
    _evidence: Any

    @api.get("/v1/items/{item_id}/image", responses={200: {"content": {"image/jpeg": {}}}, **ERRORS})
    async def item_image(self, item_id: str) -> Response:
        """The page image, the image, or the clip keyframe (JPEG)."""
        return await self._item_bytes(item_id, "image", "image/jpeg")

    @api.get("/v1/items/{item_id}/thumbnail", responses={200: {"content": {"image/png": {}}}, **ERRORS})
    async def item_thumbnail(self, item_id: str) -> Response:
        """A small PNG thumbnail of the item."""
        return await self._item_bytes(item_id, "thumbnail", "image/png")

    @api.get("/v1/items/{item_id}", response_model=ItemInfo, responses=ERRORS)
    async def item_info(self, item_id: str) -> ItemInfo:
        """What an item is: its source, page or clip bounds, the frames' times, its size, and where to get its
        image, frames, video (when the source video can be served) and evidence view."""
        row = await self._row(item_id, ["modality", "source_uri", "page", "start_s", "end_s", "frame_ts", "width",
                                        "height", "text", "content_hash", "doc_id"])  # fmt: skip
        base = f"{self.cfg.server.route_prefix.rstrip('/')}/v1/items/{item_id}"
        ts = list(row.get("frame_ts") or []) if row["modality"] == "clip" else []
        video = row["modality"] == "clip" and await asyncio.to_thread(media.source_file, row) is not None
        return ItemInfo(
            id=item_id,
            collection=row["collection"],
            doc_id=row.get("doc_id"),
            modality=row["modality"],
            source=row["source_uri"],
            page=row.get("page"),
            start_s=row.get("start_s"),
            end_s=row.get("end_s"),
            width=row.get("width"),
            height=row.get("height"),
            text=(row.get("text") or "")[:2000],
            frame_ts=ts,
            image_url=f"{base}/image",
            thumbnail_url=f"{base}/thumbnail",
            frame_urls=[f"{base}/frames/{i}" for i in range(len(ts))],
            video_url=f"{base}/video" if video else None,
            evidence_url=f"{base}/evidence",
        )

    @api.get("/v1/items/{item_id}/frames/{n}", responses={200: {"content": {"image/jpeg": {}}}, **ERRORS})
    async def item_frame(self, item_id: str, n: int) -> Response:
        """Frame ``n`` (0-based, in time order) of a clip, as embedded (JPEG)."""
        row = await self._row(item_id, ["frames"])
        frames = row.get("frames") or []
        if not 0 <= n < len(frames):
            raise ApiError(404, "not_found", f"item {item_id} has {len(frames)} frames; ask for 0 to {len(frames) - 1}")
        return Response(content=frames[n], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @api.get("/v1/items/{item_id}/video", responses={200: {"content": {"video/mp4": {}}}, **ERRORS})
    async def item_video(self, item_id: str, request: Request) -> Response:
        """The clip's source video, with Range requests (so a player can start at the clip's start), when the file
        it was ingested from is still where it was with the same content; 404 otherwise (uploads are not kept)."""
        row = await self._row(item_id, ["modality", "source_uri", "content_hash"])
        path = await asyncio.to_thread(media.source_file, row) if row["modality"] == "clip" else None
        if path is None:
            raise ApiError(
                404, "video_unavailable", "the source video is not reachable from the server (uploaded, moved or "
                "changed since ingestion); its sampled frames are at /frames/{n}",
            )  # fmt: skip
        return await asyncio.to_thread(media.ranged_file, path, request.headers.get("range"))

    @api.get("/v1/items/{item_id}/evidence", responses={200: {"content": {"image/jpeg": {}}}, **ERRORS})
    async def item_evidence(self, item_id: str, query: str, frame: int = 0) -> Response:
        """The page (or clip frame ``frame``) with the regions where ``query`` matched drawn on it (JPEG); the
        regions themselves come with ``evidence: true`` on /v1/search and /v1/answer."""
        if not query.strip() or len(query) > self.cfg.server.max_query_chars:
            raise ApiError(400, "invalid_request", f"query must be 1 to {self.cfg.server.max_query_chars} characters",
                           "query")  # fmt: skip
        from mmrag.serve.schemas import no_controls

        try:
            no_controls(query)
        except ValueError as e:
            raise ApiError(400, "invalid_request", f"query {e}", "query") from e
        row = await self._row(item_id, ["modality", "image", "frames"])
        if row["modality"] == "clip":
            frames = row.get("frames") or []
            if not 0 <= frame < len(frames):
                raise ApiError(404, "not_found", f"item {item_id} has {len(frames)} frames", "frame")
            jpeg = frames[frame]
        else:
            jpeg = row["image"]
        ev, _ = await self._evidence(query, None, [{"id": item_id, "text": ""}])
        regions = [r for r in (ev.get(item_id) or {}).get("regions", []) if r.get("frame") in (None, frame)]
        out = await asyncio.to_thread(media.draw_regions, jpeg, regions)
        return Response(content=out, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _row(self, item_id: str, columns: list[str]) -> dict[str, Any]:
        """One item's columns, scoped to the caller's collections; 400 for a malformed id, 404 when not found."""
        if not ITEM_ID_RE.match(item_id):
            raise ApiError(400, "invalid_request", "item ids are 32 lowercase hex characters", "item_id")
        row = await asyncio.to_thread(self.store.get_item, item_id, columns)
        if row is None:
            raise ApiError(404, "not_found", f"no item {item_id}")
        context.note(collection=row["collection"])
        return row

    async def _item_bytes(self, item_id: str, column: str, media_type: str) -> Response:
        if not ITEM_ID_RE.match(item_id):
            raise ApiError(400, "invalid_request", "item ids are 32 lowercase hex characters", "item_id")
        row = await asyncio.to_thread(self.store.get_item, item_id, [column])  # scoped: another tenant's is None
        if row is None or not row.get(column):
            raise ApiError(404, "not_found", f"no item {item_id}")
        context.note(collection=row["collection"])
        return Response(content=row[column], media_type=media_type, headers={"Cache-Control": "max-age=3600"})
