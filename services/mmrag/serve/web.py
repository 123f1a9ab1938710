"""The gateway's web page: ``GET /`` and its two assets under ``/ui/``, served from the package (no build step, no
CDN, no remote fonts: it works offline). The page itself is plain HTML, CSS and JavaScript in ``serve/web/``; it
talks to the same API as every other client, with the key the user types (sent as ``Authorization: Bearer``)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import Header
from fastapi.responses import Response

from mmrag.serve.api import api
from mmrag.serve.http_layer import ApiError

WEB = Path(__file__).with_name("web")
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
#: The page's paths: they need no key (they hold no data; the page asks for the key before any data call).
PAGE_PATHS = frozenset({"/", "/ui/app.js", "/ui/app.css"})
#: Everything the page loads comes from the gateway; blob: URLs are images and videos fetched with the key.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@cache
def _file(name: str) -> tuple[bytes, str]:
    body = (WEB / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _send(name: str, media_type: str, if_none_match: str | None) -> Response:
    body, etag = _file(name)
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Content-Security-Policy": CSP,
               "X-Content-Type-Options": "nosniff"}  # fmt: skip
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)


class WebRoutes:
    """The page's routes, mixed into the gateway deployment (Serve's ingress takes class methods)."""

    @api.get("/", include_in_schema=False)
    async def page(self, if_none_match: Annotated[str | None, Header()] = None) -> Response:
        return _send("index.html", "text/html; charset=utf-8", if_none_match)

    @api.get("/ui/{name}", include_in_schema=False)
    async def page_asset(self, name: str) -> Response:
        if name not in ASSETS:
            raise ApiError(404, "not_found", f"no page asset {name!r}")
        return _send(name, ASSETS[name], None)


__all__ = ["CSP", "PAGE_PATHS", "WebRoutes"]
