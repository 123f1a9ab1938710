"""One writer per store: a lease kept in the store itself, so it holds across machines and for object-store URIs.

The lease is the single row of the table ``writer_lease``: a random ``token`` naming the holder, a readable
``holder`` (host/pid/purpose), when it was taken and until when it runs (``expires_ms``, epoch milliseconds).

What guarantees one holder: every take, renewal and release is one conditional ``merge_insert`` on that row
(``UPDATE ... WHERE target.expires_ms < now OR target.token = mine``). A LanceDB commit is atomic (a new manifest
is put only if that version does not exist yet), and two concurrent updates of the same row conflict: the later
one is retried against the new version, where its condition is evaluated again. So the row's successive versions
form a compare-and-swap register: of two processes racing for a free lease exactly one gets it (measured: 4
processes racing, 1 update, 3 retried and refused), and a renewal succeeds only while the token is still its own.
Each take is then read back: a process holds the lease only if the latest version names its token.

Limits, stated plainly:

* Commits are only as atomic as the store's commit path: local disks, GCS and Azure are; S3 is where Lance can
  use conditional writes (or the DynamoDB commit store, ``s3+ddb://``). An S3-compatible store without either
  gives no guarantee here, nor for any other concurrent LanceDB write.
* Expiry compares wall clocks: the machines' clocks must agree to well within ``lease_ttl_s`` (NTP).
* It is a lease, not a fence: a holder paused for longer than the TTL (a stopped VM, a debugger) can be taken
  over and would learn so only at its next renewal, up to ``lease_renew_s`` later. Writers call
  :meth:`WriterLease.ensure_held` before each publishing step, which fails once a renewal found the lease lost or
  none succeeded for a TTL, so the window is bounded by the renewal interval, not unbounded.
* LanceDB 0.40 does not make two concurrent creations of a table exclusive (measured: both succeed, the later
  replaces the earlier, row included). A process that had to create the lease table therefore takes the lease
  again ``_SETTLE_S`` after its first take; by then a late concurrent creation has landed, and the second take
  either still holds (the row is its own, or free again) or names the other writer.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import pyarrow as pa

from mmrag.store.lance_store import StoreError

log = logging.getLogger(__name__)

LEASE = "writer_lease"
_KEY = "writer"
_SETTLE_S = 1.0
LEASE_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("holder", pa.string(), nullable=False),
        pa.field("acquired_ms", pa.int64(), nullable=False),
        pa.field("expires_ms", pa.int64(), nullable=False),
    ]
)


class LeaseHeldError(StoreError):
    """Another writer holds the store's lease; the message names it and when its lease runs out."""


class LeaseLostError(StoreError):
    """This writer's lease was taken over or could not be renewed for a whole TTL: it must stop writing."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class WriterLease:
    """The writer lease of one store, held from :meth:`acquire` (or ``with``) to :meth:`release`.

    While held, a daemon thread renews it every ``renew_s`` seconds for another ``ttl_s``; a crashed holder's lease
    therefore runs out at most ``ttl_s`` after its last renewal and the next writer can take it.
    """

    table_name = LEASE

    def __init__(self, store: Any, *, ttl_s: float = 60.0, renew_s: float = 15.0, purpose: str = "write") -> None:
        if not 0 < renew_s < ttl_s:
            raise ValueError(f"the lease renewal interval ({renew_s} s) must be positive and below its TTL ({ttl_s} s)")
        self.store = store
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.token = uuid.uuid4().hex  # hex only: safe to place in the merge condition
        self.holder = f"{socket.gethostname()}/pid {os.getpid()}/{purpose}"
        self._table: Any = None
        self._held = False
        self._lost: str | None = None
        self._last_ok = 0.0  # time.monotonic() of the last successful take or renewal
        self._acquired_ms = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, store: Any, writer_cfg: Any, *, purpose: str) -> WriterLease:
        """A lease on ``store`` with the TTL and renewal interval of ``store.writer`` in the config tree."""
        return cls(store, ttl_s=writer_cfg.lease_ttl_s, renew_s=writer_cfg.lease_renew_s, purpose=purpose)

    # ------------------------------------------------------------------------------ the row
    def _open(self) -> tuple[Any, bool]:
        """The lease table, created with a free row if the store has none; also whether this call created it."""
        db = self.store._db
        if self.store.has_table(LEASE):
            return db.open_table(LEASE), False
        free = pa.Table.from_pylist(
            [{"name": _KEY, "token": "", "holder": "", "acquired_ms": 0, "expires_ms": 0}], schema=LEASE_SCHEMA
        )
        db.create_table(LEASE, data=free, exist_ok=True)
        return db.open_table(LEASE), True

    def _row(self) -> dict[str, Any]:
        self._table.checkout_latest()
        rows = self._table.search().limit(None).to_list()
        if len(rows) != 1:
            raise StoreError(
                f"the writer lease table {LEASE!r} in {self.store.uri} holds {len(rows)} rows instead of 1; with no "
                "writer running, drop that table (the next writer recreates it)"
            )
        return rows[0]

    def _swap(self, condition: str, row: dict[str, Any]) -> None:
        """Update the lease row to ``row`` where ``condition`` holds on the latest version (see module doc)."""
        self._table.checkout_latest()
        (
            self._table.merge_insert("name")
            .when_matched_update_all(where=condition)
            .execute(pa.Table.from_pylist([{"name": _KEY, **row}], schema=LEASE_SCHEMA))
        )

    def _claim(self, now: int) -> dict[str, Any]:
        self._swap(
            f"target.expires_ms < {now} OR target.token = '{self.token}'",
            {
                "token": self.token,
                "holder": self.holder,
                "acquired_ms": now,
                "expires_ms": now + int(self.ttl_s * 1000),
            },
        )
        return self._row()

    # ------------------------------------------------------------------------------ public
    def acquire(self) -> WriterLease:
        """Take the lease or raise :class:`LeaseHeldError` naming the holder; nothing in the store is changed then."""
        self._table, created = self._open()
        now = _now_ms()
        row = self._claim(now)
        if row["token"] == self.token and created:
            time.sleep(_SETTLE_S)  # a concurrent creation of the table may replace the row just taken: take it
            row = self._claim(_now_ms())  # again (a no-op but for the expiry if it is still ours)
        if row["token"] != self.token:
            raise LeaseHeldError(
                f"the store at {self.store.uri} is being written by another writer ({row['holder']}), which took its "
                f"lease at {_utc(row['acquired_ms'])} and holds it until {_utc(row['expires_ms'])} unless renewed. "
                "One writer per store at a time: wait for that run to finish (or, if it crashed, for its lease to "
                "expire), then run again; nothing was written"
            )
        self._held, self._lost, self._last_ok = True, None, time.monotonic()
        self._acquired_ms = row["acquired_ms"]
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="mmrag-writer-lease", daemon=True)
        self._thread.start()
        log.info("writer lease on %s taken by %s until %s", self.store.uri, self.holder, _utc(row["expires_ms"]))
        return self

    def renew(self) -> None:
        """Extend the lease by a TTL from now; marks it lost if another writer holds it."""
        with self._lock:
            if not self._held or self._lost:
                return
            row = {"token": self.token, "holder": self.holder, "acquired_ms": self._acquired_ms}
            self._swap(f"target.token = '{self.token}'", {**row, "expires_ms": _now_ms() + int(self.ttl_s * 1000)})
            row = self._row()
            if row["token"] != self.token:
                self._lost = f"{row['holder'] or 'nobody'} holds it since {_utc(row['acquired_ms'])}"
                log.error("writer lease on %s lost: %s", self.store.uri, self._lost)
                return
            self._last_ok = time.monotonic()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except Exception:  # a store hiccup: retried next beat; ensure_held fails once a TTL passed without one
                log.warning("renewing the writer lease on %s failed", self.store.uri, exc_info=True)
            if self._lost:
                return

    def ensure_held(self) -> None:
        """Raise :class:`LeaseLostError` unless this writer still holds the lease (cheap: no store access unless the
        last renewal is a TTL old, when it renews once itself)."""
        if self._held and not self._lost and time.monotonic() - self._last_ok > self.ttl_s:
            try:
                self.renew()
            except Exception as e:
                self._lost = f"no renewal succeeded for {self.ttl_s:g} s ({type(e).__name__}: {e})"
            if not self._lost and time.monotonic() - self._last_ok > self.ttl_s:
                self._lost = f"no renewal succeeded for {self.ttl_s:g} s"
        if not self._held or self._lost:
            raise LeaseLostError(
                f"this run no longer holds the writer lease of {self.store.uri}"
                + (f": {self._lost}" if self._lost else "")
                + "; it stopped before publishing more. Run it again once the other writer is done"
            )

    def release(self) -> None:
        """Give the lease up (only if still ours); safe to call twice or after a failed acquire."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.renew_s + 30)
        self._thread = None
        with self._lock:
            if not self._held:
                return
            self._held = False
            if self._lost:
                return
            try:
                self._swap(
                    f"target.token = '{self.token}'", {"token": "", "holder": "", "acquired_ms": 0, "expires_ms": 0}
                )
            except Exception:  # the lease then simply expires after its TTL
                log.warning(
                    "releasing the writer lease on %s failed; it expires by itself", self.store.uri, exc_info=True
                )

    def paused(self) -> threading.Lock:
        """Hold off renewals while held (``with lease.paused():``): for compacting the lease's own table."""
        return self._lock

    def __enter__(self) -> WriterLease:
        return self if self._held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def current_holder(store: Any) -> dict[str, Any] | None:
    """The lease row if a writer holds it now (``holder``, ``acquired``, ``expires``), else None."""
    if not store.has_table(LEASE):
        return None
    rows = store._db.open_table(LEASE).search().limit(None).to_list()
    live = [r for r in rows if r["expires_ms"] >= _now_ms()]
    if not live:
        return None
    r = live[0]
    return {"holder": r["holder"], "acquired": _utc(r["acquired_ms"]), "expires": _utc(r["expires_ms"])}
