"""API keys: created once, stored as a slow hash in the store, scoped to collections.

A key reads ``mmr_<key id>_<secret>``: the key id (16 hex characters) is public and names the key in
``mmrag keys list``, the audit log and revocation; the secret (32 random bytes, URL-safe base64) is printed once
by :meth:`KeyStore.create` and stored only as its Argon2id hash (argon2-cffi's defaults, RFC 9106's low-memory
profile). The table lives beside the collections (``api_keys``), so a local path and an object-store URI work
alike and every gateway replica reads the same keys.

Scopes grow: ``read`` (search, answer, chat, items, collections), ``write`` (read, and adding or deleting
documents), ``admin`` (write, and managing keys).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from mmrag.config import COLLECTION_PATTERN
from mmrag.store import schema as S

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
PREFIX = "mmr"
KEY_RE = re.compile(r"^mmr_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_COLLECTION_RE = re.compile(COLLECTION_PATTERN)


class KeyRequestError(ValueError):
    """A key request that cannot be done (bad collection name, unknown key id); the message says why."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    m = KEY_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a key's id, name, collections (None: every collection) and scope."""

    key_id: str | None
    name: str
    collections: frozenset[str] | None
    scope: Scope
    rate_per_s: float | None = None
    tokens_per_min: int | None = None

    def can_read(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def has_scope(self, scope: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


#: No auth (``server.auth: none``): every collection, every scope.
ANONYMOUS = Principal(key_id=None, name="anonymous", collections=None, scope="admin")


@dataclass
class KeyRecord:
    """One row of the key table."""

    key_id: str
    name: str
    collections: list[str] | None
    scope: Scope
    created_at: dt.datetime
    secret_hash: str = field(repr=False)
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    rate_per_s: float | None = None
    tokens_per_min: int | None = None

    def status(self, now: dt.datetime | None = None) -> str:
        now = now or _now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(
            key_id=self.key_id,
            name=self.name,
            collections=None if self.collections is None else frozenset(self.collections),
            scope=self.scope,
            rate_per_s=self.rate_per_s,
            tokens_per_min=self.tokens_per_min,
        )

    def public(self) -> dict[str, Any]:
        """What ``mmrag keys list`` shows: everything but the hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "collections": self.collections if self.collections is not None else "*",
            "scope": self.scope,
            "rate_per_s": self.rate_per_s,
            "tokens_per_min": self.tokens_per_min,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "status": self.status(),
        }


class KeyStore:
    """The ``api_keys`` table of one store (a :class:`mmrag.store.LanceStore`)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def _table(self) -> Any:
        return self.store.ensure_table(S.API_KEYS, S.API_KEYS_SCHEMA)

    def create(
        self,
        collections: list[str] | None,
        *,
        scope: Scope = "read",
        name: str = "",
        expires_days: float | None = None,
        rate_per_s: float | None = None,
        tokens_per_min: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key: (the key, shown this once; its record). ``collections`` None or ``["*"]``: every collection."""
        import pyarrow as pa

        if collections is not None and "*" in collections:
            collections = None
        if collections is not None:
            if not collections:
                raise KeyRequestError("a key needs at least one --collection (or '*' for every collection)")
            bad = [c for c in collections if not _COLLECTION_RE.match(c)]
            if bad:
                raise KeyRequestError(f"not a collection name: {bad[0]!r} (letters, digits, '_', '.', '-'; 1-64)")
            collections = sorted(set(collections))
        if scope not in SCOPES:
            raise KeyRequestError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if expires_days is not None and not expires_days > 0:
            raise KeyRequestError("--expires takes a positive number of days")
        if rate_per_s is not None and not rate_per_s > 0:
            raise KeyRequestError("--rate takes a positive number of requests per second")
        if tokens_per_min is not None and tokens_per_min < 1:
            raise KeyRequestError("--tokens-per-min takes a positive number of generated tokens per minute")
        if any(ch in name for ch in "\x00\r\n") or len(name) > 200:
            raise KeyRequestError("a key's name is one line of at most 200 characters")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = _now()
        rec = KeyRecord(
            key_id=key_id,
            name=name,
            collections=collections,
            scope=scope,
            created_at=now,
            secret_hash=_hasher().hash(secret),
            expires_at=now + dt.timedelta(days=expires_days) if expires_days else None,
            rate_per_s=rate_per_s,
            tokens_per_min=tokens_per_min,
        )
        row = {k: getattr(rec, k) for k in S.API_KEYS_SCHEMA.names}
        self._table().add(pa.Table.from_pylist([row], schema=S.API_KEYS_SCHEMA))
        return f"{PREFIX}_{key_id}_{secret}", rec

    def records(self) -> dict[str, KeyRecord]:
        """key id -> record, every key (revoked and expired included)."""
        if not self.store.has_table(S.API_KEYS):
            return {}
        tbl = self.store.table(S.API_KEYS)
        tbl.checkout_latest()
        out = {}
        for r in tbl.search().limit(None).to_list():
            r.pop("_distance", None)
            out[r["key_id"]] = KeyRecord(**{k: r.get(k) for k in S.API_KEYS_SCHEMA.names})
        return out

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (gateways stop taking it within 5 s); revoking twice keeps the first time."""
        from lancedb.expr import col, lit

        rec = self.records().get(key_id)
        if rec is None:
            raise KeyRequestError(f"no key with id {key_id!r} (see mmrag keys list)")
        if rec.revoked_at is None:
            rec.revoked_at = _now()
            where = (col("key_id") == lit(key_id)).to_sql()
            self.store.table(S.API_KEYS).update(where=where, values={"revoked_at": rec.revoked_at})
        return rec


def verify_secret(record: KeyRecord, secret: str) -> bool:
    """Whether ``secret`` is the key's (Argon2id; ~0.1 s of CPU and 64 MiB: callers cache the outcome)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(record.secret_hash, secret))
    except (VerificationError, InvalidHashError):
        return False


def digest(token: str) -> str:
    """A fast hash of a presented key: the in-memory cache's key (never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(digest(a), digest(b))


__all__ = [
    "ANONYMOUS",
    "SCOPES",
    "KeyRecord",
    "KeyRequestError",
    "KeyStore",
    "Principal",
    "Scope",
    "digest",
    "parse_key",
    "same_secret",
    "verify_secret",
]
