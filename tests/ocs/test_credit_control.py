"""The charging server end to end over real TCP: CCRs in, CCAs out, money checked in Redis."""

from __future__ import annotations

from datetime import UTC, datetime

from protocol.message import Avp, Message, avp, request
from tests.ocs.conftest import RunningServer

PEAK = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Berlin: peak
EUR = 1_000_000


def ccr(
    session: str,
    request_type: str,
    number: int,
    *extra: Avp,
    msisdn: str = "4915100000001",
    context: str = "32260@3gpp.org",
) -> Message:
    return request(
        272,
        4,
        [
            avp("Session-Id", session),
            avp("Origin-Host", "pgw.test"),
            avp("Origin-Realm", "test"),
            avp("Destination-Realm", "test"),
            avp("Auth-Application-Id", 4),
            avp("Service-Context-Id", context),
            avp("CC-Request-Type", request_type),
            avp("CC-Request-Number", number),
            avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", msisdn)]),
            avp("Event-Timestamp", PEAK),
            *extra,
        ],
    )


def call_to(number: str) -> Avp:
    return avp(
        "Service-Information",
        [avp("IMS-Information", [avp("Node-Functionality", "AS"), avp("Called-Party-Address", f"tel:+{number}")])],
    )


def mscc(*children: Avp) -> Avp:
    return avp("Multiple-Services-Credit-Control", list(children))


def seconds(unit_avp: str, value: int) -> Avp:
    return avp(unit_avp, [avp("CC-Time", value)])


def code(message: Message) -> int | None:
    value = message.get("Result-Code")
    return value if isinstance(value, int) else None


async def test_prepaid_call_until_the_balance_runs_out(server: RunningServer) -> None:
    await server.subscriber("alice", "4915100000001", micros=300_000)  # 0.30 EUR
    client = await server.client()
    multiple = avp("Multiple-Services-Indicator", 1)
    callee = call_to("4917612345678")  # national mobile, 0.09 per minute at peak, 60/1
    # 0.30 affords 200 s: a partial grant with Final-Unit-Indication TERMINATE.
    initial = await client.request(
        ccr("call-1", "INITIAL_REQUEST", 0, multiple, mscc(seconds("Requested-Service-Unit", 300)), callee)
    )
    assert code(initial) == 2001
    service = initial.find("Multiple-Services-Credit-Control")
    assert service is not None
    granted = service.find("Granted-Service-Unit")
    assert granted is not None and granted.get("CC-Time") == 200
    final_unit = service.find("Final-Unit-Indication")
    assert final_unit is not None and final_unit.get("Final-Unit-Action") == 0
    # All 200 s used, more asked: nothing left, 4012 at service and command level.
    update = await client.request(
        ccr(
            "call-1",
            "UPDATE_REQUEST",
            1,
            multiple,
            mscc(seconds("Used-Service-Unit", 200), seconds("Requested-Service-Unit", 300)),
            callee,
        )
    )
    assert code(update) == 4012
    service = update.find("Multiple-Services-Credit-Control")
    assert service is not None and service.get("Result-Code") == 4012
    end = await client.request(ccr("call-1", "TERMINATION_REQUEST", 2, multiple, callee))
    assert code(end) == 2001
    assert server.state.store is not None
    view = await server.state.store.balance("alice", int(PEAK.timestamp()))
    assert view is not None and view.available_micros == 0 and view.committed_micros == 300_000
    await client.close()


async def test_unknown_subscriber_is_5030(server: RunningServer) -> None:
    client = await server.client()
    answer = await client.request(ccr("nobody-1", "INITIAL_REQUEST", 0, msisdn="4900000000"))
    assert code(answer) == 5030
    failed = answer.find("Failed-AVP")
    assert failed is not None and failed.children[0].code == 443  # Subscription-Id
    await client.close()
