"""The store as the current request's principal may see it: tenant isolation in one place, below HTTP.

The gateway reads the store only through a :class:`ScopedStore`. Each read asks :func:`mmrag.auth.context.current`
whose request it serves and drops every collection, item and record outside that principal's collections; a read
outside a request fails closed (:class:`mmrag.auth.context.NoPrincipal`). A route added later gets the same
scoping without doing anything. The gateway's process-wide caches (collection names, calibrations) are filled
from :attr:`ScopedStore.unscoped` and filtered per request with :meth:`ScopedStore.visible`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mmrag.auth import context


class ScopedStore:
    def __init__(self, store: Any) -> None:
        self.unscoped = store

    @staticmethod
    def visible(names: Iterable[str]) -> set[str]:
        """Those of ``names`` the current principal may read."""
        p = context.current()
        return {n for n in names if p.can_read(n)}

    @staticmethod
    def can_read(collection: str) -> bool:
        return context.current().can_read(collection)

    def collections(self) -> set[str]:
        return self.visible(self.unscoped.collections())

    def calibrations(self) -> dict[str, dict[str, Any]]:
        p = context.current()
        return {c: rec for c, rec in self.unscoped.calibrations().items() if p.can_read(c)}

    def stats(self) -> dict[str, Any]:
        """The store's stats with only the principal's collections (and no store-wide totals)."""
        p = context.current()
        st = self.unscoped.stats()
        return {"collections": {c: v for c, v in st.get("collections", {}).items() if p.can_read(c)}}

    def get_item(self, item_id: str, columns: Sequence[str]) -> dict[str, Any] | None:
        p = context.current()
        row = self.unscoped.get_item(item_id, list(dict.fromkeys([*columns, "collection"])))
        if row is None or not p.can_read(row["collection"]):
            return None  # not found, whether it exists elsewhere or not
        return row

    def get_items(self, ids: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
        p = context.current()
        rows = self.unscoped.get_items(ids, list(dict.fromkeys([*columns, "collection"])))
        return {i: r for i, r in rows.items() if p.can_read(r["collection"])}

    # ------------------------------------------------------------------------------ video summaries
    def document(self, doc_id: str) -> dict[str, Any] | None:
        """The finished document ``doc_id``, or None (also when it is in a collection the principal may not read)."""
        from mmrag.store import summaries

        doc = summaries.document(self.unscoped, doc_id)
        return doc if doc is not None and context.current().can_read(doc["collection"]) else None

    def _readable(self, doc: dict[str, Any]) -> None:
        if not context.current().can_read(doc["collection"]):
            raise PermissionError(f"collection {doc['collection']!r} is not the caller's")

    def video_clips(self, doc: dict[str, Any], *, frames: bool) -> list[dict[str, Any]]:
        from mmrag.store import summaries

        self._readable(doc)
        return summaries.clips(self.unscoped, doc, frames=frames)

    def cached_summary(self, doc: dict[str, Any], cache_key: str) -> dict[str, Any] | None:
        from mmrag.store import summaries

        self._readable(doc)
        return summaries.cached(self.unscoped, doc["doc_id"], cache_key)

    def save_summary(self, doc: dict[str, Any], cache_key: str, result: dict[str, Any]) -> None:
        from mmrag.store import summaries

        self._readable(doc)
        summaries.save(self.unscoped, doc, cache_key, result)


__all__ = ["ScopedStore"]
