"""Tariff plan versions by effective date: loading, selection at a moment, grants across a
version change, and a CCR priced at the version in force when it happened, over the real server.

The test plan is ``MINIMAL`` of test_rating.py (Europe/Berlin: UTC+2 in summer, UTC+1 in winter)
with versions appended.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance.embedded import EmbeddedRedis
from ocs.charging.credit_control import final_units
from ocs.cli.main import main
from ocs.config import FinalUnitSettings, TariffSettings
from ocs.rating.book import PlanTimeline
from ocs.rating.rate import Rated, RatingFailure, RatingInput, TariffError, explain, parse_book, rate
from protocol.message import Avp, Message, avp, request
from tests.conftest import ADMIN_HEADERS
from tests.ocs.conftest import ROOT, server_settings, server_with
from tests.ocs.test_rating import IMS, MINIMAL, SMS

# New prices from 1 July 2026 (local midnight = 2026-06-30 22:00 UTC), again from 1 October.
JULY = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
OCTOBER = datetime(2026, 9, 30, 22, 0, tzinfo=UTC)
VERSIONS = """
[[plans.p.versions]]
effective_from = 2026-07-01
services = { voice = { price_per_minute = { rest = "1.50" } }, sms = { price_per_message = { mobile = "0.11" } } }

[[plans.p.versions]]
effective_from = 2026-10-01T00:00:00+02:00
description = "autumn"
services = { sms = { price_per_message = { mobile = "0.13" } } }
"""
VERSIONED = MINIMAL + VERSIONS


def rated(result: Rated | RatingFailure) -> Rated:
    assert isinstance(result, Rated), result
    return result


def sms(at: datetime, to: str = "4915123") -> RatingInput:
    return RatingInput(SMS, None, None, to, at)


def call(at: datetime, to: str, lookahead_seconds: int = 0) -> RatingInput:
    return RatingInput(IMS, None, None, to, at, lookahead_seconds)


def test_a_plan_without_versions_is_one_version_from_the_beginning_of_time() -> None:
    book = parse_book(MINIMAL)
    timeline = book.timelines["p"]
    assert len(timeline.versions) == 1 and timeline.first is book.plans["p"]
    assert book.plans["p"].version == 1 and book.plans["p"].effective_from is None
    for moment in (datetime(1, 1, 2, tzinfo=UTC), JULY, datetime(9999, 12, 30, tzinfo=UTC)):
        assert book.plan_at("p", moment) == (book.plans["p"], None)
    assert "plan p (version 1)" in rated(rate(book, "p", sms(JULY))).explanation


def test_each_moment_is_priced_by_the_version_in_force() -> None:
    book = parse_book(VERSIONED)
    second = JULY - timedelta(seconds=1)
    cases = [
        (second, 1, 90_000),
        (JULY, 2, 110_000),
        (OCTOBER - timedelta(microseconds=1), 2, 110_000),
        (OCTOBER, 3, 130_000),
        (datetime(2030, 1, 1, tzinfo=UTC), 3, 130_000),
        (second, 1, 90_000),  # back in time after the cache moved forward
    ]
    for moment, version, micros in cases:
        result = rated(rate(book, "p", sms(moment)))
        assert (result.version, result.tariff.price_micros) == (version, micros), moment
    # A naive moment is UTC, as Diameter Time values are.
    assert rated(rate(book, "p", sms(JULY.replace(tzinfo=None)))).version == 2


def test_a_version_changes_only_what_it_names() -> None:
    book = parse_book(VERSIONED)
    first, second, third = book.timelines["p"].versions
    assert second.services["voice"].tariffs["rest"]["peak"].price_micros == 1_500_000
    assert second.services["voice"].tariffs["home"] == first.services["voice"].tariffs["home"]
    assert second.services["sms"].tariffs["home"] == first.services["sms"].tariffs["home"]
    # Later versions start from the one before: the voice change of July carries on.
    assert third.services["voice"].tariffs["rest"]["peak"].price_micros == 1_500_000
    assert (first.description, third.description) == ("", "autumn")
    assert third.effective_from == OCTOBER and second.effective_from == JULY


def test_effective_from_in_the_plan_zone_or_at_an_offset() -> None:
    local = parse_book(MINIMAL + '[[plans.p.versions]]\neffective_from = 2026-01-15T08:30:00\ndescription = "x"\n')
    utc = parse_book(MINIMAL + '[[plans.p.versions]]\neffective_from = 2026-01-15T07:30:00Z\ndescription = "x"\n')
    winter = datetime(2026, 1, 15, 7, 30, tzinfo=UTC)  # 08:30 in Berlin (UTC+1)
    assert local.timelines["p"].versions[1].effective_from == winter
    assert utc.timelines["p"].versions[1].effective_from == winter
    assert local.timelines["p"].versions[1].version_text == "version 2 from 2026-01-15 08:30 Europe/Berlin"


def test_the_explanation_and_the_quote_name_the_version() -> None:
    book = parse_book(VERSIONED)
    quote = explain(book, "p", sms(JULY), 1)
    assert not isinstance(quote, RatingFailure)
    assert "plan p (version 2 from 2026-07-01 00:00 Europe/Berlin)" in quote.text
    assert quote.cost_micros == 110_000


@given(st.lists(st.integers(min_value=0, max_value=400 * 86_400), min_size=1, max_size=30))
def test_the_cached_timeline_agrees_with_a_scan(offsets: list[int]) -> None:
    """Any order of moments: the cache never returns a version out of its window."""
    book = parse_book(VERSIONED)
    timeline: PlanTimeline = book.timelines["p"]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for offset in offsets:
        moment = start + timedelta(seconds=offset)
        expected = [plan for plan in timeline.versions if plan.effective_from is None or plan.effective_from <= moment]
        following = [
            plan.effective_from for plan in timeline.versions if plan.effective_from and plan.effective_from > moment
        ]
        assert timeline.at(moment) == (expected[-1], following[0] if following else None)


def test_a_grant_reaching_a_version_change_gets_it_as_tariff_change() -> None:
    """A call to zone rest at 23:50 local (off-peak 1.00) with 30 minutes of lookahead: the July
    version's 1.50 starts at midnight, which is the Tariff-Time-Change."""
    book = parse_book(VERSIONED)
    result = rated(rate(book, "p", call(JULY - timedelta(minutes=10), "0044123", 1800)))
    assert result.version == 1 and result.tariff.price_micros == 1_000_000
    assert result.change is not None and result.change.at == JULY and result.change.tariff.price_micros == 1_500_000
    # Not within the lookahead: no change.
    assert rated(rate(book, "p", call(JULY - timedelta(minutes=40), "0044123", 1800))).change is None
    # The October version keeps voice prices: a grant across it sees no change there, but the
    # new version's own band change (peak at 08:00 on Thursday 1 October) when it is reached.
    across = rated(rate(book, "p", call(OCTOBER - timedelta(minutes=10), "030123", 1800)))
    assert across.change is None
    long_grant = rated(rate(book, "p", call(OCTOBER - timedelta(minutes=10), "030123", 12 * 3600)))
    peak = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)
    assert long_grant.change is not None and long_grant.change.at == peak and long_grant.change.band == "peak"


def test_final_units_are_chosen_per_version() -> None:
    text = VERSIONED + '[plans.p.versions.final_unit]\naction = "REDIRECT"\nredirect_address = "https://pay.example/"\n'
    book = parse_book(text)
    chosen = final_units(book, FinalUnitSettings())
    assert chosen["p", 3, "sms"][0].action.name == "REDIRECT"
    assert chosen["p", 2, "sms"][0].action.name == "TERMINATE"


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ('effective_from = 2026-07-01\ncurrency = "USD"', "plan p: versions[0].currency: cannot change"),
        ('effective_from = 2026-07-01\ntime_zone = "UTC"', "plan p: versions[0].time_zone: cannot change"),
        ('effective_from = 2026-07-01\nzone_set = "z"', "plan p: versions[0].zone_set: cannot change"),
        ('description = "x"', "plan p: versions[0].effective_from: missing"),
        ('effective_from = "2026-07-01"', "plan p: versions[0].effective_from: str '2026-07-01' is not a TOML date"),
        ("effective_from = 2026-07-01\nprice = 1", "plan p: versions[0].price: unknown key"),
        (
            'effective_from = 2026-07-01\nservices = { sms = { kind = "data" } }',
            # A kind cannot change: the old kind's keys stay in the merged table.
            "plan p version 2 (versions[0]): services.sms.price_per_message: unknown key",
        ),
        (
            'effective_from = 2026-07-01\nservices = { sms = { price_per_message = { mobile = "0.1234567" } } }',
            "plan p version 2 (versions[0]): services.sms.price_per_message.mobile: '0.1234567' has 7 decimals",
        ),
        (
            'effective_from = 2026-07-01\ndescription = "a"\n'
            "[[plans.p.versions]]\neffective_from = 2026-06-30T22:00:00Z",
            "plan p: versions[1].effective_from: must be later than versions[0]'s",
        ),
    ],
)
def test_version_errors_name_the_plan_the_version_and_the_field(versions: str, message: str) -> None:
    with pytest.raises(TariffError) as caught:
        parse_book(f"{MINIMAL}\n[[plans.p.versions]]\n{versions}\n", "t.toml")
    assert str(caught.value).startswith(f"t.toml: {message}"), str(caught.value)


def test_versions_must_be_an_array_of_tables() -> None:
    with pytest.raises(TariffError, match="plan p: versions: must be an array of tables"):
        parse_book(MINIMAL + "[plans.p.versions]\neffective_from = 2026-07-01\n")


def test_ocs_rate_at_a_date_names_the_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The offline ``ocs rate --at`` prints the explanation, which names the version it used."""
    tariffs = tmp_path / "tariffs.toml"
    tariffs.write_text(VERSIONED)
    common = ("rate", "--tariffs", str(tariffs), "--plan", "p", "--context", SMS, "--called", "015123", "--units", "1")
    assert main([*common, "--at", "2026-06-30T21:59:59Z"]) == 0
    before = capsys.readouterr().out
    assert "plan p (version 1)" in before and "0.09 EUR" in before
    assert main([*common, "--at", "2026-07-01T00:00:00+02:00"]) == 0
    after = capsys.readouterr().out
    assert "plan p (version 2 from 2026-07-01 00:00 Europe/Berlin)" in after and "0.11 EUR (110000 micros)" in after


# --- over the wire -----------------------------------------------------------------------------

SMS_CHANGE = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 1 December, midnight in Berlin
SERVER_VERSION = """
[[plans.mobile_prepaid.versions]]
effective_from = 2026-12-01
services.sms.price_per_message.national_mobile = "0.11"
services.voice.price_per_minute.national_mobile = "0.12"
"""


def call_initial(session: str, at: datetime) -> Message:
    """A voice CCR-I asking 300 s to a national mobile number, stamped ``at``."""
    called = avp(
        "IMS-Information", [avp("Node-Functionality", "AS"), avp("Called-Party-Address", "tel:+4917612345678")]
    )
    asked = avp("Multiple-Services-Credit-Control", [avp("Requested-Service-Unit", [avp("CC-Time", 300)])])
    return _ccr(
        session,
        IMS,
        "INITIAL_REQUEST",
        at,
        avp("Multiple-Services-Indicator", 1),
        asked,
        avp("Service-Information", [called]),
    )


def sms_event(session: str, at: datetime) -> Message:
    recipient = avp("Recipient-Info", [avp("Recipient-Address", [avp("Address-Data", "4917612345678")])])
    return _ccr(
        session,
        SMS,
        "EVENT_REQUEST",
        at,
        avp("Requested-Action", "DIRECT_DEBITING"),
        avp("Requested-Service-Unit", [avp("CC-Service-Specific-Units", 1)]),
        avp("Service-Information", [avp("SMS-Information", [recipient])]),
    )


def _ccr(session: str, context: str, request_type: str, at: datetime, *extra: Avp) -> Message:
    return request(
        272,
        4,
        [
            avp("Session-Id", session),
            avp("Origin-Host", "smsc.test"),
            avp("Origin-Realm", "test"),
            avp("Destination-Realm", "test"),
            avp("Auth-Application-Id", 4),
            avp("Service-Context-Id", context),
            avp("CC-Request-Type", request_type),
            avp("CC-Request-Number", 0),
            avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "4915100000077")]),
            avp("Event-Timestamp", at),
            *extra,
        ],
    )


def result_code(message: Message) -> int | None:
    value = message.get("Result-Code")
    return value if isinstance(value, int) else None


async def test_a_ccr_after_a_version_change_is_priced_at_the_new_price(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """The server loads a tariff file with a version from 1 December: an SMS stamped a second
    before costs 0.09 (version 1), one stamped at the change 0.11 (version 2), on a real Redis."""
    tariffs = tmp_path / "tariffs.toml"
    tariffs.write_text((ROOT / "config" / "tariffs.toml").read_text() + SERVER_VERSION)
    settings = dataclasses.replace(
        server_settings(embedded_redis.url, tmp_path / "spool.sqlite3"), tariffs=TariffSettings(path=str(tariffs))
    )
    async with server_with(settings) as server:
        await server.subscriber("vera", "4915100000077", micros=1_000_000)
        client = await server.client()
        store = server.state.store
        assert store is not None
        before = await client.request(sms_event("sms-v1", SMS_CHANGE - timedelta(seconds=1)))
        assert result_code(before) == 2001
        view = await store.balance("vera", int(SMS_CHANGE.timestamp()))
        assert view is not None and view.available_micros == 1_000_000 - 90_000
        after = await client.request(sms_event("sms-v2", SMS_CHANGE))
        assert result_code(after) == 2001
        view = await store.balance("vera", int(SMS_CHANGE.timestamp()))
        assert view is not None and view.available_micros == 1_000_000 - 90_000 - 110_000
        # A call a minute before midnight: its grant reaches the new version, whose voice price
        # differs, so the grant carries Tariff-Time-Change at the version's start.
        handler = server.state.credit_control
        assert handler is not None
        handler.clock = (SMS_CHANGE - timedelta(seconds=60)).timestamp
        call = await client.request(call_initial("call-v", SMS_CHANGE - timedelta(seconds=60)))
        assert result_code(call) == 2001
        service = call.find("Multiple-Services-Credit-Control")
        grant = service.find("Granted-Service-Unit") if service is not None else None
        change = grant.get("Tariff-Time-Change") if grant is not None else None
        assert isinstance(change, datetime) and change.replace(tzinfo=UTC) == SMS_CHANGE
        await client.close()
        # The /rate API prices at ``at`` and names the version it used.
        assert server.state.http is not None
        query = {"plan": "mobile_prepaid", "context": SMS, "called": "+4917612345678", "units": "1"}
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
            for moment, version, micros in ((SMS_CHANGE - timedelta(seconds=1), 1, 90_000), (SMS_CHANGE, 2, 110_000)):
                async with session.get(
                    f"{server.state.http.url}/rate", params={**query, "at": moment.isoformat()}
                ) as got:
                    body = await got.json()
                assert got.status == 200, body
                assert (body["plan_version"], body["cost_micros"]) == (version, micros)
