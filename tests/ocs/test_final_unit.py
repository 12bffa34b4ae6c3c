"""Final-Unit-Indication per plan and service, over TCP (issue 17 item 1, RFC 4006 section 8.34).

Two plans added to the default tariff file: ``redirecting`` sends a prepaid line that runs out
to its own top-up URL, ``restricting`` restricts it to two filter rules and a filter list, and
redirects a suspended line to an IPv4 address. Each plan's video service overrides the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from balance.types import AccountStatus
from ocs.config import TariffSettings
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.message import Avp
from tests.ocs.conftest import ROOT, RunningServer, server_settings, server_with
from tests.ocs.test_credit_control import DATA, MULTIPLE, ccr, code, octets, rating_group, services_by_group


def plan(name: str, final_unit: str, video_final_unit: str) -> str:
    """A prepaid data plan with two services (10 data, 20 video) and these final_unit tables."""
    return f"""
[plans.{name}]
currency = "EUR"
time_zone = "Europe/Berlin"
default_band = "all"

[plans.{name}.final_unit]
{final_unit}

[plans.{name}.contexts."32251@3gpp.org"]
default_service = "data"
rating_groups = {{ 10 = "data", 20 = "video" }}

[plans.{name}.services.data]
kind = "data"
price = "0.01"
block_octets = 10_000

[plans.{name}.services.video]
kind = "data"
price = "0.01"
block_octets = 10_000

[plans.{name}.services.video.final_unit]
{video_final_unit}
"""


PLANS = plan(
    "redirecting",
    'action = "REDIRECT"\nredirect_address = "https://pay.redirecting.test/top-up"\nsuspended_action = "TERMINATE"',
    'action = "TERMINATE"',
) + plan(
    "restricting",
    'action = "RESTRICT_ACCESS"\n'
    'restriction_filters = ["permit out ip from any to 192.0.2.10 443", "permit out udp from any to 192.0.2.53 53"]\n'
    'filter_ids = ["walled-garden"]\n'
    'suspended_action = "REDIRECT"\n'
    'redirect_address = "192.0.2.80"\n'
    'redirect_address_type = "IPv4 Address"',
    'action = "REDIRECT"\n'
    'redirect_address = "sip:top-up@restricting.test"\n'
    'redirect_address_type = "SIP URI"\n'
    "filter_ids = []",
)

HALF_A_CENT = 5_000  # micros: affords 500 kB of data at 0.01 per MB, less than the 1 MB asked


@pytest.fixture
async def server(embedded_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[RunningServer]:
    tariffs = tmp_path / "tariffs.toml"
    tariffs.write_text((ROOT / "config" / "tariffs.toml").read_text(encoding="utf-8") + PLANS, encoding="utf-8")
    settings = server_settings(embedded_redis.url, tmp_path / "spool.sqlite3")
    async with server_with(dataclasses.replace(settings, tariffs=TariffSettings(path=str(tariffs)))) as running:
        yield running


async def final_unit_of(
    server: RunningServer, account_id: str, msisdn: str, plan: str, group: int, *, suspended: bool = False
) -> Avp:
    """The Final-Unit-Indication a line of ``plan`` gets for ``group`` when it asks for more
    than it can pay (or at all, when suspended)."""
    await server.subscriber(account_id, msisdn, micros=HALF_A_CENT, plan=plan)
    if suspended:
        assert server.state.store is not None
        await server.state.store.update(account_id, status=AccountStatus.SUSPENDED)
    client = await server.client()
    asked = rating_group(group, octets("Requested-Service-Unit", 1_000_000))
    answer = await client.request(
        ccr(f"{account_id}-1", "INITIAL_REQUEST", 0, MULTIPLE, asked, msisdn=msisdn, context=DATA)
    )
    await client.close()
    assert code(answer) == 2001
    service = services_by_group(answer)[group]
    assert service.get("Result-Code") == (4012 if suspended else 2001)
    final_unit = service.find("Final-Unit-Indication")
    assert final_unit is not None
    return final_unit


def values(final_unit: Avp, name: str) -> list[object]:
    return [member.value for member in final_unit.children if member.key == DEFAULT_DICTIONARY.key(name)]


def only_the_action(final_unit: Avp) -> bool:
    """RFC 4006 section 8.34: with TERMINATE "no other AVPs MUST be present"."""
    return [member.key for member in final_unit.children] == [DEFAULT_DICTIONARY.key("Final-Unit-Action")]


def redirect_server(final_unit: Avp) -> tuple[object, object]:
    server = final_unit.find("Redirect-Server")
    assert server is not None
    return server.get("Redirect-Address-Type"), server.get("Redirect-Server-Address")


async def test_a_plan_redirects_to_its_own_url(server: RunningServer) -> None:
    final_unit = await final_unit_of(server, "rita", "4915100000101", "redirecting", 10)
    assert final_unit.get("Final-Unit-Action") == 1  # REDIRECT, RFC 4006 section 8.35
    assert redirect_server(final_unit) == (2, "https://pay.redirecting.test/top-up")  # URL, section 8.38
    assert values(final_unit, "Restriction-Filter-Rule") == [] and values(final_unit, "Filter-Id") == []


async def test_a_plan_restricts_access_to_its_filters(server: RunningServer) -> None:
    final_unit = await final_unit_of(server, "rick", "4915100000102", "restricting", 10)
    assert final_unit.get("Final-Unit-Action") == 2  # RESTRICT_ACCESS
    assert values(final_unit, "Restriction-Filter-Rule") == [
        "permit out ip from any to 192.0.2.10 443",
        "permit out udp from any to 192.0.2.53 53",
    ]
    assert values(final_unit, "Filter-Id") == ["walled-garden"]
    assert final_unit.find("Redirect-Server") is None


async def test_a_suspended_line_gets_its_plans_suspended_action(server: RunningServer) -> None:
    restricted = await final_unit_of(server, "sue", "4915100000103", "restricting", 10, suspended=True)
    assert restricted.get("Final-Unit-Action") == 1  # the plan's suspended_action REDIRECT
    assert redirect_server(restricted) == (0, "192.0.2.80")  # IPv4 Address
    assert values(restricted, "Filter-Id") == ["walled-garden"]  # what else stays reachable
    terminated = await final_unit_of(server, "sid", "4915100000104", "redirecting", 10, suspended=True)
    assert only_the_action(terminated) and terminated.get("Final-Unit-Action") == 0


async def test_a_service_override_wins_over_its_plan(server: RunningServer) -> None:
    terminated = await final_unit_of(server, "vic", "4915100000105", "redirecting", 20)
    assert (
        only_the_action(terminated) and terminated.get("Final-Unit-Action") == 0
    )  # video: TERMINATE over the plan's REDIRECT
    redirected = await final_unit_of(server, "val", "4915100000106", "restricting", 20)
    assert redirected.get("Final-Unit-Action") == 1  # video: REDIRECT over RESTRICT_ACCESS
    assert redirect_server(redirected) == (3, "sip:top-up@restricting.test")  # SIP URI
    # filter_ids = [] replaced the plan's restriction: no filters on this redirect.
    assert values(redirected, "Restriction-Filter-Rule") == [] and values(redirected, "Filter-Id") == []


async def test_plans_that_say_nothing_keep_the_server_default(server: RunningServer) -> None:
    final_unit = await final_unit_of(server, "dora", "4915100000107", "mobile_prepaid", 10)
    assert only_the_action(final_unit) and final_unit.get("Final-Unit-Action") == 0  # [final_unit] action = TERMINATE
