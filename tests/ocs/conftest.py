"""Fixtures for server tests: the whole OCS on port 0 over a private real Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.directory import Identity, IdentityKind, Subscriber
from balance.embedded import EmbeddedRedis
from balance.types import Account, Bucket, BucketKind, PaymentType
from ocs.app import ServerState, new_state, shutdown, startup
from ocs.config import (
    DiameterSettings,
    HttpSettings,
    QuotaSettings,
    RatingSettings,
    RedisSettings,
    Settings,
    SpoolSettings,
    TariffSettings,
)
from ocs.db import tokens
from ocs.db.tokens import Role, api_tokens, digest
from protocol.aio import DiameterClient
from protocol.capabilities import LocalIdentity
from tests.balance.conftest import embedded_redis
from tests.conftest import ADMIN_TOKEN

__all__ = ["embedded_redis"]

ROOT = Path(__file__).resolve().parents[2]
CLIENT = LocalIdentity("pgw.test", "test")
# The tests stamp their requests at fixed moments (a Monday peak, ...) to know the price, however
# far from the machine's clock; the server trusts any stamp here unless a test says otherwise.
TRUST_ANY_TIMESTAMP = RatingSettings(event_timestamp_skew_seconds=100 * 366 * 86_400)


@dataclass
class RunningServer:
    state: ServerState
    port: int

    async def subscriber(
        self,
        account_id: str,
        msisdn: str,
        *,
        micros: int = 0,
        plan: str = "mobile_prepaid",
        payment_type: PaymentType = PaymentType.PREPAID,
        credit_limit_micros: int = 0,
        buckets: tuple[Bucket, ...] = (),
    ) -> None:
        assert self.state.store is not None and self.state.directory is not None
        money = (Bucket(1, BucketKind.MAIN, micros),) if micros else ()
        account = Account(
            account_id, payment_type=payment_type, credit_limit_micros=credit_limit_micros, buckets=money + buckets
        )
        assert (await self.state.store.provision(account)).outcome.value == "ok"
        identities = (Identity(IdentityKind.E164, msisdn),)
        await self.state.directory.register(Subscriber(account_id, plan, "mobile", account_id, identities))

    async def client(self) -> DiameterClient:
        return await DiameterClient.connect("127.0.0.1", self.port, CLIENT)


def server_settings(redis_url: str, spool_path: Path | None = None, **quota: int) -> Settings:
    return Settings(
        diameter=DiameterSettings(port=0, origin_host="ocs.test", origin_realm="test"),
        http=HttpSettings(port=0),
        redis=RedisSettings(url=redis_url),
        quota=dataclasses.replace(QuotaSettings(supervision_interval_seconds=0.05), **quota),
        tariffs=TariffSettings(path=str(ROOT / "config" / "tariffs.toml")),
        rating=TRUST_ANY_TIMESTAMP,
        spool=SpoolSettings(path=str(spool_path or Path(tempfile.mkdtemp()) / "spool.sqlite3"), interval_seconds=0.05),
        shutdown_timeout_seconds=2.0,
    )


@contextlib.asynccontextmanager
async def running_server(redis_url: str, spool_path: Path, **quota: int) -> AsyncIterator[RunningServer]:
    """The whole OCS on a flushed Redis, with these quota settings; shut down on the way out."""
    async with server_with(server_settings(redis_url, spool_path, **quota)) as running:
        yield running


async def ensure_admin_token(engine: AsyncEngine) -> None:
    """``ADMIN_TOKEN`` in this database (once: servers restarted on one directory share it)."""
    if await tokens.find(engine, ADMIN_TOKEN) is not None:
        return
    async with engine.begin() as connection:
        await connection.execute(
            insert(api_tokens).values(
                name="tests",
                role=Role.ADMIN.value,
                token_sha256=digest(ADMIN_TOKEN),
                created_at=datetime.now(UTC).replace(tzinfo=None),
            )
        )


@contextlib.asynccontextmanager
async def server_with(settings: Settings, *, flush: bool = True) -> AsyncIterator[RunningServer]:
    """The whole OCS with these settings, on a flushed Redis unless told; shut down on the way out."""
    state = new_state(settings)
    address = await startup(state)
    assert state.store is not None and state.http is not None and state.database is not None
    await ensure_admin_token(state.database)
    if flush:
        await state.store.flush_all()
    try:
        yield RunningServer(state, address[1])
    finally:
        await shutdown(state)


@pytest.fixture
async def server(embedded_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(embedded_redis.url, tmp_path / "spool.sqlite3") as running:
        yield running
