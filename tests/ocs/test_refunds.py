"""REFUND_ACCOUNT limits and currency, over TCP (issue 17 items 2 and 3; RFC 4006 section 6.3/6.4).

Every refusal is checked twice: its Result-Code (and Failed-AVP), and the balance in Redis,
which must not have moved. The per-day sum is also checked across two server processes'
worth of servers on one Redis, refunding at the same time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from ocs.config import RefundSettings
from protocol.message import Avp, Message, avp
from tests.ocs.conftest import RunningServer, server_settings, server_with
from tests.ocs.test_credit_control import EUR, balance_of, call_to, ccr, code

EURO, US_DOLLAR = 978, 840  # ISO 4217 numeric codes (Currency-Code, RFC 4006 section 8.11)
LIMITS = RefundSettings(max_request_micros=EUR, max_day_micros=EUR)
CC_MONEY = 413  # RFC 4006 section 8.22


def money(cents: int, currency_code: int | None = EURO) -> Avp:
    """CC-Money of ``cents`` hundredths (Unit-Value, section 8.8), with or without Currency-Code."""
    members = [avp("Unit-Value", [avp("Value-Digits", cents), avp("Exponent", -2)])]
    if currency_code is not None:
        members.append(avp("Currency-Code", currency_code))
    return avp("CC-Money", members)


def refund(session: str, msisdn: str, *units: Avp) -> Message:
    requested = avp("Requested-Service-Unit", list(units))
    action = avp("Requested-Action", "REFUND_ACCOUNT")
    return ccr(session, "EVENT_REQUEST", 0, action, requested, call_to("4917612345678"), msisdn=msisdn)


def failed_avp(answer: Message) -> Avp:
    failed = answer.find("Failed-AVP")
    assert failed is not None and len(failed.children) == 1
    return failed.children[0]


@pytest.fixture
async def limited(embedded_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server whose refunds may credit at most 1 EUR each and 1 EUR per account and day."""
    settings = dataclasses.replace(server_settings(embedded_redis.url, tmp_path / "spool.sqlite3"), refund=LIMITS)
    async with server_with(settings) as running:
        yield running


def at(server: RunningServer, moment: datetime) -> None:
    """Set the server's clock (the refund's day is the plan's calendar day of the server's now)."""
    assert server.state.credit_control is not None
    server.state.credit_control.clock = _fixed(moment.timestamp())


def _fixed(seconds_since_epoch: float) -> Callable[[], float]:
    return lambda: seconds_since_epoch


async def test_money_in_another_currency_is_refused_and_credits_nothing(server: RunningServer) -> None:
    await server.subscriber("cora", "4915100000201", micros=EUR)  # an EUR account
    client = await server.client()
    dollars = money(50, US_DOLLAR)
    refused = await client.request(refund("cur-1", "4915100000201", dollars))
    # RFC 4006 section 9.1: 5031, the value cannot be used in rating; Failed-AVP the CC-Money.
    assert code(refused) == 5031 and failed_avp(refused) == dollars
    assert await balance_of(server, "cora") == EUR
    euros = await client.request(refund("cur-2", "4915100000201", money(50)))
    assert code(euros) == 2001
    cost = euros.find("Cost-Information")
    assert cost is not None and cost.get("Currency-Code") == EURO
    no_code = await client.request(refund("cur-3", "4915100000201", money(25, None)))  # [ Currency-Code ]
    assert code(no_code) == 2001
    assert await balance_of(server, "cora") == EUR + 750_000
    await client.close()


async def test_a_refund_above_the_per_request_limit_is_refused(limited: RunningServer) -> None:
    await limited.subscriber("reed", "4915100000202", micros=EUR)
    client = await limited.client()
    too_much = money(150)
    refused = await client.request(refund("big-1", "4915100000202", too_much))
    assert code(refused) == 5012 and failed_avp(refused) == too_much
    assert "limit" in str(refused.get("Error-Message"))
    assert await balance_of(limited, "reed") == EUR
    # A refund of units is priced first: 20 minutes at 0.09 is 1.80, over the limit too.
    priced = await client.request(refund("big-2", "4915100000202", avp("CC-Time", 1_200)))
    assert code(priced) == 5012 and await balance_of(limited, "reed") == EUR
    assert code(await client.request(refund("big-3", "4915100000202", money(100)))) == 2001  # at the limit
    assert await balance_of(limited, "reed") == 2 * EUR
    await client.close()


async def test_the_day_limit_counts_per_account_and_calendar_day_of_the_plan(limited: RunningServer) -> None:
    await limited.subscriber("dana", "4915100000203", micros=EUR)
    await limited.subscriber("dirk", "4915100000204", micros=EUR)
    client = await limited.client()
    at(limited, datetime(2026, 11, 23, 22, 30, tzinfo=UTC))  # Monday 23:30 in Berlin
    first = refund("day-1", "4915100000203", money(60))
    assert code(await client.request(first)) == 2001
    over = await client.request(refund("day-2", "4915100000203", money(50)))
    assert code(over) == 4010  # RFC 4006 section 9.1: denied by a service restriction, transient
    assert "limit" in str(over.get("Error-Message")) and await balance_of(limited, "dana") == EUR + 600_000
    assert code(await client.request(first)) == 2001  # a replay is answered again, not counted again
    assert code(await client.request(refund("day-3", "4915100000203", money(40)))) == 2001  # exactly 1.00
    assert code(await client.request(refund("day-4", "4915100000203", money(1)))) == 4010
    assert code(await client.request(refund("day-5", "4915100000204", money(100)))) == 2001  # another account
    at(limited, datetime(2026, 11, 23, 23, 30, tzinfo=UTC))  # still Monday in UTC, Tuesday 00:30 in Berlin
    assert code(await client.request(refund("day-6", "4915100000203", money(100)))) == 2001
    assert await balance_of(limited, "dana") == 3 * EUR and await balance_of(limited, "dirk") == 2 * EUR
    await client.close()


async def test_the_day_limit_holds_across_servers_refunding_at_once(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dataclasses.replace(server_settings(embedded_redis.url, tmp_path / "spool.sqlite3"), refund=LIMITS)
    other = dataclasses.replace(settings, spool=dataclasses.replace(settings.spool, path=str(tmp_path / "b.sqlite3")))
    async with server_with(settings) as one, server_with(other, flush=False) as two:
        await one.subscriber("mia", "4915100000205", micros=EUR)
        clients = [await one.client(), await two.client()]
        # Ten refunds of 0.25 at once, half through each server: the day's 1.00 allows four.
        answers = await asyncio.gather(
            *(clients[n % 2].request(refund(f"race-{n}", "4915100000205", money(25))) for n in range(10))
        )
        assert sorted(code(answer) for answer in answers) == [2001] * 4 + [4010] * 6
        assert await balance_of(one, "mia") == 2 * EUR
        for client in clients:
            await client.close()
