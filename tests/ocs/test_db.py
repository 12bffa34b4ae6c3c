"""The business database (ocs/db) on SQLite and on a private PostgreSQL: migrations, tokens, and
the audit trail, every query on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.config import Settings, SpoolSettings
from ocs.db import audit, tokens
from ocs.db.audit import AuditEntry
from ocs.db.engine import DATABASE_FILE_NAME, DatabaseUnavailable, database_url, migrate, open_database
from ocs.db.tokens import Role, TokenError
from tests.ocs.postgres_support import business_database, postgresql_url

__all__ = ["postgresql_url"]

MOMENT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, ("audit_trail", "api_tokens")) as made:  # each test starts empty
        yield made


def test_the_default_database_is_a_file_beside_the_spool(tmp_path: Path) -> None:
    settings = Settings(spool=SpoolSettings(path=str(tmp_path / "data" / "spool.sqlite3")))
    assert database_url(settings) == f"sqlite+aiosqlite:///{tmp_path / 'data' / DATABASE_FILE_NAME}"


async def test_migrations_make_both_tables_and_run_again_as_nothing(engine: AsyncEngine) -> None:
    await migrate(engine)  # already at the newest revision: changes nothing
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert {"api_tokens", "audit_trail", "alembic_version"} <= names
    # 0019: loyalty counters by member; 0018: payments by time; 0017: segment pinned; 0016: loyalty
    assert revision == "0019"


async def test_order_items_are_found_by_line_through_an_index(engine: AsyncEngine) -> None:
    """The bill run's facts read each line's plan history by ``product_order_items.line_id``."""
    async with engine.connect() as connection:
        indexes = await connection.run_sync(lambda sync: inspect(sync).get_indexes("product_order_items"))
    assert ["line_id"] in [index["column_names"] for index in indexes]


async def test_an_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"database postgresql\+asyncpg://ocs:\*\*\*@127.0.0.1:1/ocs"):
        await open_database("postgresql+asyncpg://ocs:secret@127.0.0.1:1/ocs")


async def test_a_token_is_found_by_its_text_and_stored_only_as_a_digest(engine: AsyncEngine) -> None:
    token, secret = await tokens.create(engine, name="ana", role=Role.CARE, adjust_limit_micros=20_000_000)
    assert secret.startswith("ocs_") and len(secret) == 4 + 43
    found = await tokens.find(engine, secret)
    assert found == token and found.adjust_limit_micros == 20_000_000 and found.role is Role.CARE
    assert await tokens.find(engine, secret + "x") is None
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT token_sha256 FROM api_tokens"))).scalar_one()
    assert stored == tokens.digest(secret) and secret not in stored


async def test_revoked_and_expired_tokens_say_why(engine: AsyncEngine) -> None:
    token, secret = await tokens.create(engine, name="bo", role=Role.ADMIN, expires_at=MOMENT + timedelta(days=1))
    assert token.refusal(MOMENT) is None
    assert "expired" in (token.refusal(MOMENT + timedelta(days=2)) or "")
    revoked = await tokens.revoke(engine, token.token_id, now=MOMENT)
    assert revoked is not None and revoked.revoked_at == MOMENT
    again = await tokens.revoke(engine, token.token_id, now=MOMENT + timedelta(hours=1))
    assert again is not None and again.revoked_at == MOMENT  # the first revocation stays
    found = await tokens.find(engine, secret)
    assert found is not None and "revoked" in (found.refusal(MOMENT) or "")
    assert await tokens.revoke(engine, 999) is None
    assert [listed.token_id for listed in await tokens.list_tokens(engine)] == [token.token_id]


async def test_a_token_gets_only_the_fields_its_role_uses(engine: AsyncEngine) -> None:
    with pytest.raises(TokenError, match="account: a self-care token names"):
        await tokens.create(engine, name="cy", role=Role.SELF_CARE)
    with pytest.raises(TokenError, match="only a care token carries one"):
        await tokens.create(engine, name="cy", role=Role.ADMIN, adjust_limit_micros=1)
    with pytest.raises(TokenError, match="only a self-care token"):
        await tokens.create(engine, name="cy", role=Role.CARE, account_id="alice")
    assert await tokens.list_tokens(engine) == []


def entry(minutes: int, account: str | None, actor: str, token_id: int | None = 1) -> AuditEntry:
    return AuditEntry(
        occurred_at=MOMENT + timedelta(minutes=minutes),
        token_id=token_id,
        actor_name=actor,
        actor_role="care",
        method="POST",
        route="/subscribers/{account_id}/topups",
        resource_id=account,
        status=201,
        outcome="applied",
        before={"available_micros": 0},
        after={"available_micros": 5_000_000, "status": "active"},
        detail="top-up t1 of 5.00",
    )


async def test_the_audit_trail_keeps_values_and_filters_by_time_account_and_actor(engine: AsyncEngine) -> None:
    await audit.record(engine, [entry(0, "alice", "ana"), entry(10, "bob", "ana"), entry(20, "alice", "bo", 2)])
    everything = await audit.read(engine)
    assert [(item.resource_id, item.actor_name) for item in everything] == [
        ("alice", "ana"),
        ("bob", "ana"),
        ("alice", "bo"),
    ]
    first = everything[0]
    assert first.after == {"available_micros": 5_000_000, "status": "active"} and first.occurred_at == MOMENT
    assert first == entry(0, "alice", "ana")  # record_id aside, what was written comes back
    window = await audit.read(engine, since=MOMENT + timedelta(minutes=10), until=MOMENT + timedelta(minutes=20))
    assert [item.resource_id for item in window] == ["bob"]
    assert [item.actor_name for item in await audit.read(engine, account_id="alice")] == ["ana", "bo"]
    assert [item.resource_id for item in await audit.read(engine, actor="bo")] == ["alice"]
    assert [item.actor_name for item in await audit.read(engine, actor="2")] == ["bo"]  # by token id
    assert len(await audit.read(engine, limit=1)) == 1
