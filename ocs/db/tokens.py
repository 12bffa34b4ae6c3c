"""The API's bearer tokens: made, found, listed and revoked; only their SHA-256 is stored.

Theory of operation: a token is ``ocs_`` and 43 URL-safe characters of 256 random bits
(``secrets.token_urlsafe(32)``), shown once when it is made. The table keeps its SHA-256 (hex),
never the token, so a copy of the database gives no one a usable token. A slow, salted password
hash (bcrypt, scrypt, Argon2) exists to make guessing a *human-chosen* secret from its hash
expensive; a 256-bit random value cannot be guessed whatever the hash costs (2^256 candidates),
so one SHA-256 is as safe here, and cheap enough to compute on every request. The prefix lets
secret scanners and people recognise a leaked token.

A token has a role (``Role``), a name (who holds it), optionally the account it is limited to
(self-care), its own limit per adjustment (care), an expiry, and a revocation time. ``find``
answers why a token is refused (unknown, revoked, expired) so the API can say it; every request
looks its token up, so a revocation made offline with ``ocs token revoke`` applies at once.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.schema import metadata, utc_aware, utc_naive

TOKEN_PREFIX = "ocs_"
TOKEN_RANDOM_BYTES = 32  # 256 bits: beyond guessing, so no slow hash is needed (see above)


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything
    CARE = "care"  # customer work, top-ups, adjustments up to a limit
    READ_ONLY = "read-only"  # reports, audit, balances: every read
    SELF_CARE = "self-care"  # one account's own data, and top-ups with a payment reference


api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("account_id", String(256), nullable=True),  # self-care: the one account it may see
    Column("adjust_limit_micros", BigInteger, nullable=True),  # care: its own, lower limit
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),  # naive UTC, as every time here
    Column("expires_at", DateTime, nullable=True),
    Column("revoked_at", DateTime, nullable=True),
)


@dataclass(frozen=True, slots=True)
class Token:
    token_id: int
    name: str
    role: Role
    account_id: str | None
    adjust_limit_micros: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def refusal(self, now: datetime) -> str | None:
        """Why this token may not be used at ``now``, or None when it may."""
        if self.revoked_at is not None:
            return f"the token {self.token_id} ({self.name}) was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return f"the token {self.token_id} ({self.name}) expired at {self.expires_at.isoformat()}"
        return None


class TokenError(ValueError):
    """A token that cannot be made as asked (the message names the field)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _token_of(row: object) -> Token:
    values = row._mapping  # type: ignore[attr-defined]
    return Token(
        token_id=values["token_id"],
        name=values["name"],
        role=Role(values["role"]),
        account_id=values["account_id"],
        adjust_limit_micros=values["adjust_limit_micros"],
        created_at=utc_aware(values["created_at"]),
        expires_at=utc_aware(values["expires_at"]) if values["expires_at"] is not None else None,
        revoked_at=utc_aware(values["revoked_at"]) if values["revoked_at"] is not None else None,
    )


def check_new_token(role: Role, account_id: str | None, adjust_limit_micros: int | None) -> None:
    """The fields a role needs, and none it cannot use: refused before anything is written."""
    if role is Role.SELF_CARE and not account_id:
        raise TokenError("account: a self-care token names the account it may see (--account)")
    if role is not Role.SELF_CARE and account_id:
        raise TokenError(f"account: only a self-care token is limited to an account, not a {role} token")
    if adjust_limit_micros is not None and role is not Role.CARE:
        raise TokenError(f"adjust limit: only a care token carries one, not a {role} token")
    if adjust_limit_micros is not None and adjust_limit_micros < 0:
        raise TokenError("adjust limit: 0 or more")


async def create(
    engine: AsyncEngine,
    *,
    name: str,
    role: Role,
    account_id: str | None = None,
    adjust_limit_micros: int | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[Token, str]:
    """A new token and its secret text (to be shown once; only its digest is kept)."""
    check_new_token(role, account_id, adjust_limit_micros)
    if not name.strip():
        raise TokenError("name: say who holds the token")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    created = now or datetime.now(UTC)
    async with engine.begin() as connection:
        result = await connection.execute(
            insert(api_tokens)
            .values(
                name=name,
                role=role.value,
                account_id=account_id,
                adjust_limit_micros=adjust_limit_micros,
                token_sha256=digest(secret),
                created_at=utc_naive(created),
                expires_at=utc_naive(expires_at) if expires_at is not None else None,
            )
            .returning(*api_tokens.c)
        )
        token = _token_of(result.one())
    return token, secret


async def find(engine: AsyncEngine, secret: str) -> Token | None:
    """The token whose text is ``secret`` (revoked and expired ones too: the caller says why not)."""
    async with engine.connect() as connection:
        row = (await connection.execute(select(api_tokens).where(api_tokens.c.token_sha256 == digest(secret)))).first()
    return _token_of(row) if row is not None else None


async def list_tokens(engine: AsyncEngine) -> list[Token]:
    async with engine.connect() as connection:
        rows = (await connection.execute(select(api_tokens).order_by(api_tokens.c.token_id))).all()
    return [_token_of(row) for row in rows]


async def revoke(engine: AsyncEngine, token_id: int, *, now: datetime | None = None) -> Token | None:
    """Revoke the token (from now on it gets 401); None when there is no such token. Revoking a
    revoked token changes nothing and keeps the first revocation time."""
    moment = utc_naive(now or datetime.now(UTC))
    async with engine.begin() as connection:
        await connection.execute(
            update(api_tokens)
            .where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=moment)
        )
        row = (await connection.execute(select(api_tokens).where(api_tokens.c.token_id == token_id))).first()
    return _token_of(row) if row is not None else None
