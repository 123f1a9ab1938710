"""The authenticator a gateway replica asks once per request: ``Authorization`` header in, principal out.

- The key table is read from the store in the background every ``server.key_refresh_s``, and at once when the
  copy in memory is 4 s old: a revoked or expired key stops working on every replica within 5 s. A key id the copy
  does not know is looked up again in a read that starts after the request came (a key made a moment ago works at
  once); those reads run one at a time, at most one per ``UNKNOWN_READ_GAP_S``, so made-up key ids cannot flood the
  store.
- Argon2id verification costs ~0.1 s of CPU and 64 MiB, so its outcome is kept in memory under a SHA-256 of the
  presented key (never stored): a good key is verified once per replica, a wrong secret for a real key id is
  refused from memory for a minute, and at most two verifications run at a time. A token that is not shaped like
  a key, or names no key id, is refused without hashing at all.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from mmrag.auth.keys import ANONYMOUS, KeyRecord, KeyStore, Principal, digest, parse_key, same_secret, verify_secret

log = logging.getLogger(__name__)

#: A copy of the key table this old is re-read before it is used (the 5 s revocation promise, less a read).
MAX_AGE_S = 4.0
NEGATIVE_TTL_S = 60.0
#: reads for key ids the copy does not know start at least this far apart
UNKNOWN_READ_GAP_S = 0.2
CACHE_ENTRIES = 10_000
#: A request with no key on a public path (health, API docs) under auth: sees no collection.
NOBODY = Principal(key_id=None, name="unauthenticated", collections=frozenset(), scope="read")


class AuthError(Exception):
    """401 (no key, bad key, revoked, expired) or 503 (the key table cannot be read); the message says which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Authenticator:
    def __init__(
        self,
        keys: KeyStore | None,
        *,
        required: bool,
        refresh_s: float = 2.0,
        admin_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.required = required
        self.refresh_s = refresh_s
        self.admin_key = admin_key or None
        self._clock = clock
        self._records: dict[str, KeyRecord] = {}
        self._read_at = -1e18
        self._loading: asyncio.Future[Any] | None = None
        self._good: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._bad: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._verifying: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, server_cfg: Any, store: Any, env: Mapping[str, str] = os.environ) -> Authenticator:
        admin = env.get(server_cfg.admin_key_env) if server_cfg.admin_key_env else None
        return cls(
            KeyStore(store),
            required=server_cfg.auth == "required",
            refresh_s=server_cfg.key_refresh_s,
            admin_key=admin,
        )

    # ------------------------------------------------------------------------------ the key table
    def _load(self) -> None:
        assert self.keys is not None
        started = self._clock()
        self._records = self.keys.records()
        self._read_at = started  # the copy holds every key made before the read started

    async def _reload(self) -> None:
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))
        fut = self._loading
        try:
            await asyncio.shield(fut)
        finally:
            if self._loading is fut and fut.done():
                self._loading = None

    async def _table(self) -> dict[str, KeyRecord]:
        age = self._clock() - self._read_at
        if age >= MAX_AGE_S:
            try:
                await self._reload()
            except Exception as e:
                log.exception("reading the key table failed")
                raise AuthError(503, "auth_unavailable", "the key table cannot be read; try again shortly") from e
        elif age >= self.refresh_s and self._loading is None:
            task = asyncio.ensure_future(self._reload())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failed background read waits
        return self._records

    async def _table_since(self, since: float) -> dict[str, KeyRecord]:
        """The key table from a read that started at ``since`` or later (waits for one, or starts it)."""
        while self._read_at < since:
            if self._loading is None:
                wait = self._read_at + UNKNOWN_READ_GAP_S - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                await self._reload()  # joins a read in flight; the loop starts another if that one began earlier
            except Exception as e:
                log.exception("reading the key table failed")
                raise AuthError(503, "auth_unavailable", "the key table cannot be read; try again shortly") from e
        return self._records

    # ------------------------------------------------------------------------------ requests
    async def authenticate(self, authorization: str | None, *, public: bool = False) -> Principal:
        """The principal of a request from its ``Authorization`` header; on ``public`` paths a missing key is
        :data:`NOBODY` instead of a 401."""
        if not self.required:
            return ANONYMOUS
        if not authorization:
            if public:
                return NOBODY
            raise AuthError(401, "missing_api_key", "this server needs an API key: send 'Authorization: Bearer KEY'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "invalid_api_key", "the Authorization header must read 'Bearer KEY'")
        if self.admin_key and same_secret(token, self.admin_key):
            return Principal(key_id="admin-env", name="admin (environment)", collections=None, scope="admin")
        parsed = parse_key(token)
        if parsed is None:
            raise AuthError(401, "invalid_api_key", "that is not an mmrag API key (mmrag keys create makes them)")
        key_id, secret = parsed
        arrived = self._clock()
        rec = (await self._table()).get(key_id)
        if rec is None:  # made since the last read?
            rec = (await self._table_since(arrived)).get(key_id)
        if rec is None:
            raise AuthError(401, "invalid_api_key", "unknown API key")
        status = rec.status()
        if status != "active":
            raise AuthError(401, "invalid_api_key", f"this API key was {status}")
        if not await self._verified(token, rec, secret):
            raise AuthError(401, "invalid_api_key", "unknown API key")
        return rec.principal()

    async def _verified(self, token: str, rec: KeyRecord, secret: str) -> bool:
        d = digest(token)
        if self._good.get(d) == (rec.key_id, rec.secret_hash):
            self._good.move_to_end(d)
            return True
        now = self._clock()
        until = self._bad.get(d)
        if until is not None and until > now:
            return False
        if self._verifying is None:
            self._verifying = asyncio.Semaphore(2)
        async with self._verifying:
            ok = await asyncio.to_thread(verify_secret, rec, secret)
        cache, value = (self._good, (rec.key_id, rec.secret_hash)) if ok else (self._bad, now + NEGATIVE_TTL_S)
        cache[d] = value  # type: ignore[assignment]
        while len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)
        return ok


__all__ = ["NOBODY", "AuthError", "Authenticator"]
