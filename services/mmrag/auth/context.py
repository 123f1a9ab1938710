"""The principal of the request being served, as a context variable.

Set by the gateway's HTTP middleware (:class:`mmrag.serve.access.AccessControl`) before any route runs; asyncio
tasks and ``asyncio.to_thread`` inherit it. Readers that find none fail closed (:func:`current`)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from mmrag.auth.keys import Principal

PRINCIPAL: ContextVar[Principal | None] = ContextVar("mmrag_principal", default=None)
#: Per-request facts for the audit line that only the routes know (the collection, the query).
AUDIT: ContextVar[dict[str, Any] | None] = ContextVar("mmrag_audit", default=None)


class NoPrincipal(PermissionError):
    """A store read outside any request's context: refused rather than unscoped."""


def current() -> Principal:
    p = PRINCIPAL.get()
    if p is None:
        raise NoPrincipal("no principal in this context: reads of the store happen inside a request")
    return p


def note(**facts: Any) -> None:
    """Add facts to the current request's audit line (no-op outside a request)."""
    audit = AUDIT.get()
    if audit is not None:
        audit.update(facts)
