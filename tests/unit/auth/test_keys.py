"""API keys for real in a LanceDB store: created once, hashed, listed, revoked, expired; and the authenticator
that turns an Authorization header into a principal (401s, caches, the 5 s revocation promise)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest

from mmrag.auth.guard import MAX_AGE_S, NOBODY, Authenticator, AuthError
from mmrag.auth.keys import ANONYMOUS, KeyRequestError, KeyStore, parse_key
from mmrag.store import LanceStore
from mmrag.store import schema as S

pytestmark = pytest.mark.unit


@pytest.fixture
def keys(tmp_path) -> KeyStore:
    return KeyStore(LanceStore(str(tmp_path / "db")))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _auth(keys: KeyStore, clock: Clock | None = None, **kw) -> Authenticator:
    return Authenticator(keys, required=True, refresh_s=2.0, clock=clock or Clock(), **kw)


def _run(coro):
    return asyncio.run(coro)


def test_a_key_is_shown_once_and_only_its_hash_is_stored(keys: KeyStore) -> None:
    key, rec = keys.create(["docs", "other", "docs"], scope="read", name="team a", rate_per_s=5)
    key_id, secret = parse_key(key)
    assert key_id == rec.key_id and rec.collections == ["docs", "other"]
    rows = keys.store.table(S.API_KEYS).to_arrow().to_pylist()
    assert len(rows) == 1
    stored = repr(rows)
    assert secret not in stored and key not in stored, "no plaintext key in the store"
    assert rows[0]["secret_hash"].startswith("$argon2id$")
    listed = keys.records()[key_id].public()
    assert "secret_hash" not in listed and listed["status"] == "active" and listed["rate_per_s"] == 5


@pytest.mark.parametrize(
    ("collections", "kw", "says"),
    [
        ([], {}, "at least one"),
        (["a b"], {}, "not a collection name"),
        (["docs"], {"scope": "root"}, "scope must be"),
        (["docs"], {"expires_days": 0}, "positive number of days"),
        (["docs"], {"rate_per_s": -1}, "requests per second"),
        (["docs"], {"name": "two\nlines"}, "one line"),
    ],
)
def test_bad_key_requests_say_what_is_wrong(keys: KeyStore, collections, kw, says) -> None:
    with pytest.raises(KeyRequestError, match=says):
        keys.create(collections, **kw)
    assert keys.records() == {}, "nothing written"


def test_the_authenticator_takes_good_keys_and_refuses_the_rest(keys: KeyStore) -> None:
    key, rec = keys.create(["docs"])
    star, _ = keys.create(["*"], scope="write")
    auth = _auth(keys)
    p = _run(auth.authenticate(f"Bearer {key}"))
    assert p.key_id == rec.key_id and p.can_read("docs") and not p.can_read("other") and p.scope == "read"
    assert _run(auth.authenticate(f"bearer {star}")).collections is None
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for header, code in [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        (f"Basic {key}", "invalid_api_key"),
        ("Bearer ", "invalid_api_key"),
        ("Bearer sk-not-ours", "invalid_api_key"),
        ("Bearer mmr_0123456789abcdef_" + "A" * 43, "invalid_api_key"),  # well formed, no such key id
        (f"Bearer {wrong_secret}", "invalid_api_key"),
    ]:
        with pytest.raises(AuthError) as e:
            _run(auth.authenticate(header))
        assert e.value.status == 401 and e.value.code == code, header
    # a public path without a key sees nothing; with no auth at all, everything
    assert _run(auth.authenticate(None, public=True)) is NOBODY
    assert _run(Authenticator(keys, required=False).authenticate(None)) is ANONYMOUS


def test_verification_is_cached_both_ways(keys: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrag.auth import guard

    key, _ = keys.create(["docs"])
    calls: list[bool] = []
    real = guard.verify_secret

    def counted(rec, secret):
        calls.append(True)
        return real(rec, secret)

    monkeypatch.setattr(guard, "verify_secret", counted)
    auth = _auth(keys)
    for _ in range(3):
        _run(auth.authenticate(f"Bearer {key}"))
    assert len(calls) == 1, "a good key is verified once"
    bad = key[:-1] + ("x" if key[-1] != "x" else "y")
    for _ in range(3):
        with pytest.raises(AuthError):
            _run(auth.authenticate(f"Bearer {bad}"))
    assert len(calls) == 2, "a wrong secret is refused from memory after one verification"


def test_revocation_and_expiry_take_effect_within_5_s(keys: KeyStore) -> None:
    key, rec = keys.create(["docs"])
    clock = Clock()
    auth = _auth(keys, clock)
    assert _run(auth.authenticate(f"Bearer {key}")).key_id == rec.key_id
    keys.revoke(rec.key_id)
    assert keys.records()[rec.key_id].status() == "revoked"
    clock.t += MAX_AGE_S  # the copy in memory is now as old as a request may use: re-read before use
    with pytest.raises(AuthError, match="revoked"):
        _run(auth.authenticate(f"Bearer {key}"))
    # expiry is checked on every request against the record's time
    short, srec = keys.create(["docs"], expires_days=1 / 86400)  # one second
    clock.t += MAX_AGE_S
    assert _run(auth.authenticate(f"Bearer {short}")).key_id == srec.key_id
    import time

    time.sleep(1.1)
    with pytest.raises(AuthError, match="expired"):
        _run(auth.authenticate(f"Bearer {short}"))
    with pytest.raises(KeyRequestError, match="no key"):
        keys.revoke("0" * 16)


def test_a_key_made_after_the_last_read_works_at_once(keys: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key id the copy in memory lacks is looked up in a read that starts after the request: a new key works on
    its first request; made-up key ids cost at most one read per UNKNOWN_READ_GAP_S, shared by all of them."""
    import time

    from mmrag.auth.guard import UNKNOWN_READ_GAP_S

    old, _ = keys.create(["docs"])
    auth = Authenticator(keys, required=True, refresh_s=2.0)  # the real clock
    _run(auth.authenticate(f"Bearer {old}"))
    new, rec = keys.create(["docs"])
    assert _run(auth.authenticate(f"Bearer {new}")).key_id == rec.key_id

    reads: list[float] = []
    real = keys.records

    def counted() -> dict:
        reads.append(time.monotonic())
        return real()

    monkeypatch.setattr(keys, "records", counted)

    async def flood() -> list[BaseException | object]:
        made_up = [f"Bearer mmr_{i:016x}_" + "A" * 43 for i in range(50)]
        return await asyncio.gather(*(auth.authenticate(h) for h in made_up), return_exceptions=True)

    t0 = time.monotonic()
    out = _run(flood())
    took = time.monotonic() - t0
    assert all(isinstance(e, AuthError) and e.status == 401 for e in out)
    assert 1 <= len(reads) <= 2 + took / UNKNOWN_READ_GAP_S, (len(reads), took)
    assert all(b - a >= UNKNOWN_READ_GAP_S * 0.9 for a, b in itertools.pairwise(reads)), reads


def test_background_refresh_keeps_requests_off_the_store(keys: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between refresh_s and the 4 s limit the copy in memory serves while a re-read runs in the background."""
    key, _rec = keys.create(["docs"])
    clock = Clock()
    auth = _auth(keys, clock)

    async def go() -> None:
        await auth.authenticate(f"Bearer {key}")
        read_at = auth._read_at
        clock.t += 2.5
        await auth.authenticate(f"Bearer {key}")  # served from memory; a re-read starts
        for _ in range(100):
            if auth._read_at != read_at:
                break
            await asyncio.sleep(0.02)
        assert auth._read_at == clock.t, "refreshed in the background"

    _run(go())


def test_an_unreadable_key_table_is_503_not_open(keys: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = keys.create(["docs"])
    auth = _auth(keys)

    def broken() -> dict:
        raise OSError("store unreachable")

    monkeypatch.setattr(keys, "records", broken)
    with pytest.raises(AuthError) as e:
        _run(auth.authenticate(f"Bearer {key}"))
    assert e.value.status == 503


def test_the_admin_key_from_the_environment(keys: KeyStore) -> None:
    from types import SimpleNamespace

    cfg = SimpleNamespace(auth="required", key_refresh_s=2.0, admin_key_env="MY_ADMIN_KEY")
    auth = Authenticator.from_config(cfg, keys.store, env={"MY_ADMIN_KEY": "s3cret-admin"})
    p = _run(auth.authenticate("Bearer s3cret-admin"))
    assert p.scope == "admin" and p.collections is None
    with pytest.raises(AuthError):
        _run(auth.authenticate("Bearer s3cret-admiN"))
    off = Authenticator.from_config(cfg, keys.store, env={})
    with pytest.raises(AuthError):
        _run(off.authenticate("Bearer s3cret-admin"))


def test_expiry_time_is_stored(keys: KeyStore) -> None:
    _, rec = keys.create(["docs"], expires_days=30)
    got = keys.records()[rec.key_id]
    assert got.expires_at is not None
    assert dt.timedelta(days=29.9) < got.expires_at - got.created_at < dt.timedelta(days=30.1)
