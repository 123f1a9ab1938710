"""Store upkeep, a part of :class:`mmrag.store.lance_store.LanceStore`: the items table's indexes (scalar, full-text,
the dense channel's vector index) and ``optimize`` (compaction, index folding, removal of old versions that no reader
can still be on).

A mixin: it uses the store's ``_db``, ``_tables``, ``_names()``, ``table()``, ``has_items()``, ``count_items()``,
``text_dim()`` and ``uri``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from mmrag.store import schema as S

log = logging.getLogger(__name__)


class StoreUpkeep:
    """Index builds and ``optimize`` of an mmrag store (mixed into :class:`~mmrag.store.lance_store.LanceStore`)."""

    _db: Any
    _tables: dict[str, Any]
    uri: str

    def refresh_scalar_indexes(self) -> None:
        """(Re)build the items table's scalar indexes on what lookups and filters use: ``id`` and ``doc_id``
        (B-tree), ``collection`` (bitmap). Rows written after a build are still found (scanned) until the next one;
        ingestion rebuilds them after every run (~0.1 s per 200k rows)."""
        import warnings

        if not self.has_items() or not self.count_items(visible_only=False):
            return
        tbl = self.table(S.ITEMS)
        with warnings.catch_warnings():  # create_scalar_index is deprecated for create_index(config=...), which
            warnings.simplefilter("ignore", DeprecationWarning)  # in 0.40 still routes to the vector path
            for column, kind in (("id", "BTREE"), ("doc_id", "BTREE"), ("collection", "BITMAP")):
                tbl.create_scalar_index(column, index_type=kind, replace=True)

    def refresh_text_index(self) -> None:
        """(Re)build the full-text index over ``text`` (takes ~0.1 s per few thousand rows)."""
        if self.has_items() and self.count_items(visible_only=False):
            self.table(S.ITEMS).create_fts_index("text", replace=True)

    def indexes(self) -> list[dict[str, Any]]:
        """The items table's indexes: name, columns, type, rows in the index and rows written since."""
        if not self.has_items():
            return []
        tbl = self.table(S.ITEMS)
        out = []
        for i in tbl.list_indices():
            st = tbl.index_stats(i.name)
            out.append(
                {
                    "name": i.name,
                    "columns": list(i.columns),
                    "type": str(i.index_type),
                    "indexed_rows": getattr(st, "num_indexed_rows", None),
                    "unindexed_rows": getattr(st, "num_unindexed_rows", None),
                }
            )
        return out

    def refresh_vector_index(self, min_rows: int, *, stale_share: float = 0.2) -> str | None:
        """Build the dense channel's vector index on ``text_vector`` once ``min_rows`` rows have one (0: never), and
        rebuild it when more than ``stale_share`` of them came after it (LanceDB searches those flat meanwhile).
        Returns what was done: "built", "rebuilt" or None."""
        if not min_rows or not self.has_items() or self.text_dim() is None:
            return None
        tbl = self.table(S.ITEMS)
        n = tbl.count_rows(f"{S.TEXT_VECTOR} IS NOT NULL")
        if n < min_rows:
            return None
        index = next((i for i in tbl.list_indices() if getattr(i, "columns", None) == [S.TEXT_VECTOR]), None)
        if index is not None:
            stats = tbl.index_stats(index.name)
            unindexed = getattr(stats, "num_unindexed_rows", 0) or 0
            if unindexed <= stale_share * n:
                return None
        dim = self.text_dim() or 0
        tbl.create_index(
            metric="cosine",
            vector_column_name=S.TEXT_VECTOR,
            index_type="IVF_PQ",
            num_partitions=max(1, int(math.sqrt(n))),
            num_sub_vectors=_sub_vectors(dim),
            replace=True,
        )
        log.info("vector index on %s %s over %d rows", S.TEXT_VECTOR, "rebuilt" if index else "built", n)
        return "rebuilt" if index is not None else "built"

    def optimize(
        self,
        *,
        keep_versions_s: float = 3600.0,
        refresh_indexes: bool = True,
        text_ann_min_rows: int = 0,
        lease: Any = None,
    ) -> dict[str, Any]:
        """Store upkeep: refresh the items table's indexes, then per table compact small fragments (and rows deleted
        in them), fold new rows into existing indexes, and remove old versions. The caller holds the writer lease
        (``lease``; its renewals pause while the lease's own table is compacted, else the two commits collide).

        A version is removed only once it has been superseded for more than ``keep_versions_s`` (Lance's own cutoff
        counts from a version's creation, which would remove the version every reader is on when an idle store is
        compacted), and the version current when this call began is always kept: a query still running on a version
        that was current up to that long ago keeps its files. A reader that pins an older version for longer
        (``store.read_consistency_s: null`` and never reopened) fails on its next read after an optimize removes
        that version; it must reopen the store.

        Items written before the int8 token copies existed get theirs first (:func:`mmrag.store.tokens.fill_copies`).

        Returns per table ``fragments``, ``versions`` and ``rows`` as [before, after] (or ``error``), the token copies
        filled, and seconds."""
        import contextlib
        import time

        from mmrag.store import tokens

        t0 = time.perf_counter()
        filled = 0
        if self.has_items():  # rows written before the int8 token copies existed (see mmrag.store.tokens)
            items = self.table(S.ITEMS)
            filled = tokens.fill_copies(items, items.schema.field("pooled").type.list_size)
        names = sorted(self._names())
        start: dict[str, tuple[dict[str, int], float]] = {}  # shape, and when its current version was made
        for name in names:
            tbl = self._db.open_table(name)
            start[name] = (_shape(tbl), _created(tbl.list_versions())[-1])
        if refresh_indexes:
            self.refresh_scalar_indexes()
            self.refresh_text_index()
            self.refresh_vector_index(text_ann_min_rows)
        tables: dict[str, Any] = {}
        for name in names:
            tbl = self._db.open_table(name)
            before, current = start[name]
            if before["fragments"] <= 1 and before["versions"] <= 1 and _shape(tbl) == before:
                tables[name] = {k: [v, v] for k, v in before.items()}
                continue
            pause = lease.paused() if lease is not None and name == lease.table_name else contextlib.nullcontext()
            try:
                with pause:
                    # compaction and index folding first, keeping every version: Lance reads the clock for its
                    # cleanup only after compacting, which may take minutes on a big table; the second call has
                    # nothing left to compact, so the cutoff computed just before it is what Lance applies
                    tbl.optimize(cleanup_older_than=_KEEP_ALL, delete_unverified=False)
                    older = _cleanup_cutoff(tbl.list_versions(), keep_versions_s, current)
                    tbl.optimize(cleanup_older_than=older, delete_unverified=False)
            except Exception as e:  # e.g. a concurrent writer outside the lease (mmrag keys): the next run retries
                log.warning("optimizing table %s of %s failed", name, self.uri, exc_info=True)
                tables[name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            tbl.checkout_latest()
            after = _shape(tbl)
            tables[name] = {k: [before[k], after[k]] for k in before}
        self._tables.clear()
        return {
            "uri": self.uri,
            "tables": tables,
            "token_copies_filled": filled,
            "seconds": round(time.perf_counter() - t0, 3),
        }


#: A cleanup cutoff that removes nothing (a century).
_KEEP_ALL = dt.timedelta(days=36500)
#: Extra age a version must have before cleanup removes it: the time between computing the cutoff and Lance
#: reading its clock (it has only a no-op compaction to do in between).
CLOCK_MARGIN_S = 5.0


def _shape(tbl: Any) -> dict[str, int]:
    st = tbl.stats()
    return {
        "fragments": int(st["fragment_stats"]["num_fragments"]),
        "versions": len(tbl.list_versions()),
        "rows": int(st["num_rows"]),
    }


def _created(versions: list[dict[str, Any]]) -> list[float]:
    """Creation times of a table's versions (epoch s), oldest first. ``list_versions`` gives naive local datetimes
    (``datetime.fromtimestamp``), which ``.timestamp()`` reads back as local."""
    return [v["timestamp"].timestamp() for v in sorted(versions, key=lambda v: v["version"])]


def _cleanup_cutoff(versions: list[dict[str, Any]], keep_s: float, current: float | None = None) -> dt.timedelta:
    """``cleanup_older_than`` that keeps every version current at some moment of the last ``keep_s`` seconds (the
    newest version created before that window, the one current when it began, and all after it) and the version
    made at ``current`` (the one current when the optimize began) onwards. Lance removes versions created before
    now - cutoff; ``CLOCK_MARGIN_S`` covers the time until it reads its clock."""
    import time

    now = time.time()
    before = [t for t in _created(versions) if t < now - keep_s]
    keep_from = min(before[-1] if before else now - keep_s, now if current is None else current)
    return dt.timedelta(seconds=max(now - keep_from + CLOCK_MARGIN_S, CLOCK_MARGIN_S, 0.001))


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: 8 dimensions each where that divides ``dim`` (384 -> 48), else the largest divisor <= dim/8."""
    want = max(1, dim // 8)
    return next(m for m in range(want, 0, -1) if dim % m == 0)


__all__ = ["CLOCK_MARGIN_S", "StoreUpkeep"]
