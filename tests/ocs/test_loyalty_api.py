"""The loyalty API and commands over the wire (ocs/api/loyalty.py, ocs/loyalty/reports.py,
ocs/cli/loyalty.py): the whole OCS on port 0 over a private Redis and SQLite, called over real HTTP
and through the ``ocs`` command line.

The programmes of config/loyalty.toml; a member's segment set and shown; the bonus history by
member and programme; members by segment; the programmes report (bonus issued, spent as measured
from the line's bonus bucket, cost against budget); the loyalty ledger; refusals naming the field;
the OpenAPI entries."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from balance.types import BucketKind
from ocs.db.loyalty import loyalty_applications, loyalty_budgets, loyalty_events
from tests.ocs.test_api import Api, api
from tests.ocs.test_cli import ocs

__all__ = ["api"]

UNIT = 1_000_000


async def member_with_a_line(api: Api, customer_id: str = "lena") -> str:
    body = {
        "customer_id": customer_id,
        "individual": {"given_name": "Lena", "family_name": "Example", "birth_date": "1985-02-03"},
    }
    assert (await api.call("POST", "/customers", body))[0] == 201
    line = {"line_id": f"{customer_id}-1", "identities": [{"kind": "msisdn", "value": "4915100000901"}]}
    assert (await api.call("POST", f"/customers/{customer_id}/lines", line))[0] == 201
    return f"{customer_id}-1"


async def credited_bonus(api: Api, line_id: str, amount_micros: int) -> None:
    """What the engine leaves after crediting a payment bonus of ``prompt_payer``: the event, the
    application credited, the budget's spending (config/loyalty.toml)."""
    database = api.server.state.database
    assert database is not None
    async with database.begin() as connection:
        await connection.execute(
            insert(loyalty_events).values(
                trigger_id="pay-1", kind="payment", member_id="lena", amount_micros=5 * UNIT, at_seconds=1_800_000_000
            )
        )
        await connection.execute(
            insert(loyalty_applications).values(
                rule_id="payment_bonus",
                programme_id="prompt_payer",
                member_id="lena",
                line_id=line_id,
                trigger_id="pay-1",
                trigger_kind="payment",
                action="bonus_money",
                amount_micros=amount_micros,
                units=0,
                unit_kind=None,
                services="",
                valid_until=0,
                cost_micros=amount_micros,
                at_seconds=1_800_000_000,
                committed_at_ms=1_800_000_000_000,
                credited_at_ms=1_800_000_000_020,
                state="credited",
                outcome=None,
            )
        )
        await connection.execute(
            insert(loyalty_budgets).values(programme_id="prompt_payer", spent_micros=amount_micros)
        )


def programme(report: dict[str, Any], programme_id: str) -> dict[str, Any]:
    return next(item for item in report["programmes"] if item["programme_id"] == programme_id)


async def test_programmes_members_history_reports_and_the_ledger(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    line_id = await member_with_a_line(api)
    status, programmes = await api.call("GET", "/loyalty/programmes")
    assert status == 200
    assert "voice_to_data" in [item["programme_id"] for item in programmes["programmes"]]
    status, one = await api.call("GET", "/loyalty/programmes/prompt_payer")
    assert status == 200 and one["budget_micros"] == 50_000 * UNIT and one["rules"][0]["rule_id"] == "payment_bonus"
    status, missing = await api.call("GET", "/loyalty/programmes/nope")
    assert status == 404 and "programme_id" in str(missing)

    status, member = await api.call("PUT", "/loyalty/members/lena/segment", {"segment": "ideal"})
    assert status == 200 and member["segment"] == "ideal"
    status, refused = await api.call("PUT", "/loyalty/members/lena/segment", {"segment": "Not A Name"})
    assert status == 422 and "segment" in str(refused)
    assert (await api.call("PUT", "/loyalty/members/nobody/segment", {"segment": "ideal"}))[0] == 404
    status, segments = await api.call("GET", "/loyalty/reports/segments")
    assert status == 200 and segments["members"]["ideal"] == 1

    # 1.00 credited; the engine's bonus bucket of the line holds 0.40 of it: 0.60 was spent.
    await credited_bonus(api, line_id, UNIT)
    assert api.server.state.store is not None
    await api.server.state.store.top_up(line_id, "loyalty|payment_bonus|pay-1", 400_000, kind=BucketKind.BONUS)
    status, member = await api.call("GET", "/loyalty/members/lena")
    assert status == 200 and [item["trigger_id"] for item in member["applications"]] == ["pay-1"]
    status, history = await api.call("GET", "/loyalty/applications", query={"programme": "prompt_payer"})
    assert status == 200 and [item["amount_micros"] for item in history["applications"]] == [UNIT]
    status, none = await api.call("GET", "/loyalty/applications", query={"member": "someone-else"})
    assert status == 200 and none["applications"] == []
    status, refused = await api.call("GET", "/loyalty/applications", query={"limit": "0"})
    assert status == 422 and "limit" in str(refused)

    status, report = await api.call("GET", "/loyalty/reports/programmes")
    assert status == 200
    payer = programme(report, "prompt_payer")
    assert (payer["bonus_issued_micros"], payer["bonus_spent_micros"], payer["bonus_expired_micros"]) == (
        UNIT,
        600_000,
        0,
    )
    assert (payer["cost_micros"], payer["budget_left_micros"]) == (UNIT, 50_000 * UNIT - UNIT)
    assert "bonus buckets" in report["spent_measure"]
    status, ledger = await api.call("GET", "/loyalty/reports/ledger")
    assert (status, ledger) == (200, {"ok": True, "problems": []})

    status, document = await api.call("GET", "/openapi.json")
    assert status == 200 and "/loyalty/members/{customer_id}/segment" in document["paths"]
    assert "ProgrammesReport" in document["components"]["schemas"]

    status, out, err = await ocs(capsys, "--url", api.url, "loyalty", "report", "programmes")
    assert (status, err) == (0, "") and "prompt_payer: issued 1.00, pending 0.00, spent 0.60" in out
    status, out, _ = await ocs(capsys, "--url", api.url, "loyalty", "member", "lena", "--segment", "average")
    assert status == 0 and out.startswith("member lena (individual), segment average")
    status, out, _ = await ocs(capsys, "--url", api.url, "loyalty", "applications", "--member", "lena")
    assert status == 0 and "prompt_payer/payment_bonus" in out and "1 application(s)" in out
    status, out, _ = await ocs(capsys, "--url", api.url, "loyalty", "programmes", "voice_to_data")
    assert status == 0 and "voice_spend_data_discount: on usage" in out
