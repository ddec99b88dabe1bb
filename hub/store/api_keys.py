"""API keys: shown once at creation, stored as HMAC-SHA256 under the server secret.

Keys are 32 random bytes, so a keyed hash is enough (no slow password hash needed); the HMAC key
means a copy of the database alone does not let anyone test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from hub.errors import ConfigurationError
from hub.settings import check_rate_limit
from hub.store.db import utcnow, write_tx
from hub.store.models import ApiKey

K = ApiKey.__table__  # type: ignore[attr-defined]
KEY_PREFIX = "hub_"


@dataclass(frozen=True, slots=True)
class Client:
    """An authenticated caller and the sources it may post to (``*`` = all)."""

    name: str
    sources: frozenset[str]
    rate_limit: str | None = None  # its own limit; None: the process default

    def may_post(self, source: str) -> bool:
        return "*" in self.sources or source in self.sources


def hash_key(secret: str, key: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def create(engine: Engine, secret: str, name: str, sources: list[str],
           rate_limit: str | None = None) -> str:
    """Create a key and return it in clear (the only time it is ever shown); ``rate_limit``
    is checked (``check_rate_limit``) before anything is written."""
    rate_limit = _checked(rate_limit)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with write_tx(engine) as conn:
            conn.execute(K.insert(), {
                "name": name, "key_hash": hash_key(secret, key), "prefix": key[:10],
                "sources": ",".join(sorted(set(sources))), "created_at": utcnow(),
                "rate_limit": rate_limit,
            })
    except IntegrityError:
        raise ConfigurationError(f"an API key named '{name}' already exists") from None
    return key


def authenticate(engine: Engine, secret: str, key: str) -> Client | None:
    with engine.connect() as conn:
        row = conn.execute(select(K.c.name, K.c.sources, K.c.rate_limit).where(
            K.c.key_hash == hash_key(secret, key), K.c.revoked_at.is_(None))).first()
    return None if row is None else Client(row.name, frozenset(row.sources.split(",")),
                                           row.rate_limit)


def list_keys(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(select(K.c.name, K.c.prefix, K.c.sources, K.c.rate_limit,
                                   K.c.created_at, K.c.revoked_at).order_by(K.c.name)).all()
    return [dict(r._mapping) for r in rows]


def revoke(engine: Engine, name: str) -> bool:
    with write_tx(engine) as conn:
        done = conn.execute(update(K).where(K.c.name == name, K.c.revoked_at.is_(None))
                            .values(revoked_at=utcnow())).rowcount
    return bool(done)


def set_rate_limit(engine: Engine, name: str, rate_limit: str | None) -> bool:
    """Give the key ``name`` its own rate limit (None: back to the process default); False if
    there is no such unrevoked key. Running ``hub serve`` processes see it at the key's next
    request (a key is looked up per request)."""
    rate_limit = _checked(rate_limit)
    with write_tx(engine) as conn:
        done = conn.execute(update(K).where(K.c.name == name, K.c.revoked_at.is_(None))
                            .values(rate_limit=rate_limit)).rowcount
    return bool(done)


def _checked(rate_limit: str | None) -> str | None:
    """``check_rate_limit`` as a ConfigurationError (the CLI's one line); None passes."""
    if rate_limit is None:
        return None
    try:
        return check_rate_limit(rate_limit)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
