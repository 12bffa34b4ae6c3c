"""The charging server end to end over real TCP: CCRs in, CCAs out, money checked in Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time as clock
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from balance.audit import audit
from balance.embedded import EmbeddedRedis
from balance.types import Bucket, BucketKind, PaymentType
from ocs.app import new_state, shutdown, startup
from ocs.billing.cdr import export
from ocs.config import RatingSettings
from ocs.db.usage import usage_records
from ocs.rating.rate import parse_book
from protocol.codec import decode
from protocol.encoded import EncodedAnswer
from protocol.message import Avp, Message, avp, request
from tests.balance.conftest import LosesMarks
from tests.ocs.conftest import ROOT, RunningServer, server_settings

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


def sms_to(number: str) -> Avp:
    recipient = avp("Recipient-Info", [avp("Recipient-Address", [avp("Address-Data", number)])])
    return avp("Service-Information", [avp("SMS-Information", [recipient])])


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


def octets(unit_avp: str, value: int) -> Avp:
    return avp(unit_avp, [avp("CC-Total-Octets", value)])


def events(unit_avp: str, value: int) -> Avp:
    return avp(unit_avp, [avp("CC-Service-Specific-Units", value)])


def services_by_group(answer: Message) -> dict[int, Avp]:
    found: dict[int, Avp] = {}
    for service in answer.find_all("Multiple-Services-Credit-Control"):
        group = service.get("Rating-Group")
        found[group if isinstance(group, int) else -1] = service
    return found


def granted(service: Avp, unit_avp: str) -> object:
    grant = service.find("Granted-Service-Unit")
    return grant.get(unit_avp) if grant is not None else None


async def balance_of(server: RunningServer, account_id: str) -> int:
    assert server.state.store is not None
    view = await server.state.store.balance(account_id, int(PEAK.timestamp()))
    assert view is not None
    return view.available_micros


async def test_data_session_with_two_rating_groups_and_an_allowance(server: RunningServer) -> None:
    allowance = Bucket(2, BucketKind.OCTETS, 5_000_000, ("data",))
    await server.subscriber("dana", "4915100000002", micros=1 * EUR, buckets=(allowance,))
    client = await server.client()
    data = "32251@3gpp.org"
    multiple = avp("Multiple-Services-Indicator", 1)

    def rg(group: int, *units: Avp) -> Avp:
        return mscc(avp("Rating-Group", group), *units)

    asked = [rg(10, octets("Requested-Service-Unit", 8_000_000)), rg(20, octets("Requested-Service-Unit", 2_000_000))]
    initial = await client.request(
        ccr("pdp-1", "INITIAL_REQUEST", 0, multiple, *asked, msisdn="4915100000002", context=data)
    )
    assert code(initial) == 2001
    services = services_by_group(initial)
    assert granted(services[10], "CC-Total-Octets") == 8_000_000
    assert granted(services[20], "CC-Total-Octets") == 2_000_000
    assert services[10].get("Validity-Time") == 1800 and services[10].get("Volume-Quota-Threshold") == 1_600_000
    # RG 10 (data, 0.01/MB): 5 MB from the allowance, 3 MB = 0.03 held; RG 20 (video, 0.005/MB): 0.01 held.
    assert await balance_of(server, "dana") == 960_000
    used = [rg(10, octets("Used-Service-Unit", 6_000_000)), rg(20, octets("Used-Service-Unit", 1_000_000))]
    end = await client.request(
        ccr("pdp-1", "TERMINATION_REQUEST", 1, multiple, *used, msisdn="4915100000002", context=data)
    )
    assert code(end) == 2001
    # 6 MB of RG 10: 5 MB allowance + 1 MB = 0.01; 1 MB of RG 20 = 0.005.
    assert await balance_of(server, "dana") == 985_000
    await client.close()


async def test_sms_as_direct_debit_event_and_as_ecur(server: RunningServer) -> None:
    await server.subscriber("sam", "4915100000003", micros=200_000)
    client = await server.client()
    sms = "32274@3gpp.org"
    # IEC: one SMS to a national mobile (0.09), debited at once.
    event = await client.request(
        ccr(
            "sms-1",
            "EVENT_REQUEST",
            0,
            avp("Requested-Action", "DIRECT_DEBITING"),
            events("Requested-Service-Unit", 1),
            sms_to("4917612345678"),
            msisdn="4915100000003",
            context=sms,
        )
    )
    assert code(event) == 2001
    assert await balance_of(server, "sam") == 110_000
    # ECUR: reserve on INITIAL, commit on TERMINATION.
    initial = await client.request(
        ccr(
            "sms-2",
            "INITIAL_REQUEST",
            0,
            events("Requested-Service-Unit", 1),
            sms_to("4917612345678"),
            msisdn="4915100000003",
            context=sms,
        )
    )
    assert code(initial) == 2001 and await balance_of(server, "sam") == 20_000
    end = await client.request(
        ccr(
            "sms-2",
            "TERMINATION_REQUEST",
            1,
            events("Used-Service-Unit", 1),
            sms_to("4917612345678"),
            msisdn="4915100000003",
            context=sms,
        )
    )
    assert code(end) == 2001 and await balance_of(server, "sam") == 20_000
    # A third SMS is more than 0.02 affords.
    refused = await client.request(
        ccr(
            "sms-3",
            "EVENT_REQUEST",
            0,
            avp("Requested-Action", "DIRECT_DEBITING"),
            events("Requested-Service-Unit", 1),
            sms_to("4917612345678"),
            msisdn="4915100000003",
            context=sms,
        )
    )
    assert code(refused) == 4012 and await balance_of(server, "sam") == 20_000
    await client.close()


async def test_check_balance_price_enquiry_and_refund(server: RunningServer) -> None:
    await server.subscriber("pete", "4915100000004", micros=100_000)
    client = await server.client()
    callee = call_to("4917612345678")

    def event(session: str, action: str, *extra: Avp) -> Message:
        return ccr(session, "EVENT_REQUEST", 0, avp("Requested-Action", action), *extra, callee, msisdn="4915100000004")

    enough = await client.request(event("q-1", "CHECK_BALANCE", seconds("Requested-Service-Unit", 60)))
    assert code(enough) == 2001 and enough.get("Check-Balance-Result") == 0
    too_much = await client.request(event("q-2", "CHECK_BALANCE", seconds("Requested-Service-Unit", 120)))
    assert too_much.get("Check-Balance-Result") == 1
    price = await client.request(event("q-3", "PRICE_ENQUIRY", seconds("Requested-Service-Unit", 90)))
    cost = price.find("Cost-Information")
    assert cost is not None and cost.get("Currency-Code") == 978
    unit_value = cost.find("Unit-Value")
    assert unit_value is not None and (unit_value.get("Value-Digits"), unit_value.get("Exponent")) == (135_000, -6)
    assert await balance_of(server, "pete") == 100_000  # asking changes nothing
    money = avp(
        "CC-Money", [avp("Unit-Value", [avp("Value-Digits", 25), avp("Exponent", -2)]), avp("Currency-Code", 978)]
    )
    refund = event("r-1", "REFUND_ACCOUNT", avp("Requested-Service-Unit", [money]))
    assert code(await client.request(refund)) == 2001
    assert code(await client.request(refund)) == 2001  # the same key again: applied once
    assert await balance_of(server, "pete") == 350_000
    await client.close()


async def test_retransmitted_update_is_charged_once(server: RunningServer) -> None:
    await server.subscriber("rita", "4915100000005", micros=EUR)
    client = await server.client()
    callee = call_to("4917612345678")
    await client.request(
        ccr("call-r", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 120), callee, msisdn="4915100000005")
    )
    update = ccr(
        "call-r",
        "UPDATE_REQUEST",
        1,
        seconds("Used-Service-Unit", 120),
        seconds("Requested-Service-Unit", 120),
        callee,
        msisdn="4915100000005",
    )
    first = await client.request(update)
    after_first = await balance_of(server, "rita")
    # The same request again, flagged as a retransmission, as a client does after failover.
    update.flags |= 0x10
    again = await client.request(update)
    assert code(first) == code(again) == 2001
    assert await balance_of(server, "rita") == after_first
    await client.close()


async def test_silent_session_is_released_by_tcc(embedded_redis: EmbeddedRedis, tmp_path: Path) -> None:
    state = new_state(server_settings(embedded_redis.url, tmp_path / "spool.sqlite3", validity_seconds=1))
    address = await startup(state)
    assert state.store is not None
    await state.store.flush_all()
    server = RunningServer(state, address[1])
    await server.subscriber("tom", "4915100000006", micros=EUR)
    client = await server.client()
    now = datetime.fromtimestamp(clock.time(), UTC)
    request = ccr(
        "silent-1",
        "INITIAL_REQUEST",
        0,
        seconds("Requested-Service-Unit", 600),
        call_to("4917612345678"),
        msisdn="4915100000006",
    )
    request.avps = [a for a in request.avps if a.code != 55] + [avp("Event-Timestamp", now)]
    answer = await client.request(request)
    assert code(answer) == 2001
    view = await state.store.balance("tom", int(clock.time()))
    assert view is not None and view.held_micros > 0
    # Tcc = 2 x Validity-Time = 2 s; the supervisor looks every 50 ms.
    for _ in range(100):
        await asyncio.sleep(0.1)
        view = await state.store.balance("tom", int(clock.time()))
        if view is not None and view.held_micros == 0:
            break
    assert view is not None and view.held_micros == 0 and view.available_micros == EUR and view.reservations == 0
    await client.close()
    await shutdown(state)


async def test_an_sms_debited_while_its_marks_fail_is_answered_2001_and_reaches_the_spool(
    server: RunningServer,
) -> None:
    """The debit applied, the spool writer's mark did not (Redis lost after the script): the SMS
    is answered 2001, not 3004 (a client would have seen it refused yet paid), and once the marks
    go through again, the supervision loop's rescan hands the record to the spool. The marks are
    commands of their own on a Redis Cluster; on the single Redis here the script makes them
    (``marks_in_charge``), so the store is told to send them as on a cluster."""
    state = server.state
    assert state.store is not None and state.spool is not None
    await server.subscriber("sid", "4915100000031", micros=EUR)
    store = state.store
    assert store.marks_in_charge
    store.marks_in_charge = False
    store.caller = losing = LosesMarks(store.caller)
    client = await server.client()
    event = ccr(
        "sms-marks",
        "EVENT_REQUEST",
        0,
        avp("Requested-Action", "DIRECT_DEBITING"),
        events("Requested-Service-Unit", 1),
        sms_to("4917612345678"),
        msisdn="4915100000031",
        context="32274@3gpp.org",
    )
    assert code(await client.request(event)) == 2001
    assert await balance_of(server, "sid") == EUR - 90_000 and store.marks_lost
    losing.losing = False
    for _ in range(200):  # the supervisor looks every 50 ms; the spool writer drains as often
        if await state.spool.count() == 1:
            break
        await asyncio.sleep(0.05)
    assert await state.spool.count() == 1 and not store.marks_lost
    await client.close()


async def test_unknown_rating_group_is_5031_with_failed_avp(server: RunningServer) -> None:
    await server.subscriber("uma", "4915100000007", micros=EUR)
    client = await server.client()
    answer = await client.request(
        ccr(
            "pdp-x",
            "INITIAL_REQUEST",
            0,
            avp("Multiple-Services-Indicator", 1),
            mscc(avp("Rating-Group", 999), octets("Requested-Service-Unit", 1000)),
            msisdn="4915100000007",
            context="32251@3gpp.org",
        )
    )
    assert code(answer) == 5031
    failed = answer.find("Failed-AVP")
    assert failed is not None and failed.children[0].code == 432 and failed.children[0].value == 999  # Rating-Group
    await client.close()


async def test_missing_mandatory_avp_is_5005_with_failed_avp(server: RunningServer) -> None:
    client = await server.client()
    request = ccr("bad-1", "INITIAL_REQUEST", 0)
    request.avps = [a for a in request.avps if a.code != 415]  # drop CC-Request-Number
    answer = await client.request(request)
    assert code(answer) == 5005
    failed = answer.find("Failed-AVP")
    assert failed is not None and failed.children[0].code == 415
    await client.close()


async def test_redis_down_answers_3004_and_resumes_without_drift(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(redis_server.start)
    state = new_state(server_settings(redis_server.url))
    address = await startup(state)
    server = RunningServer(state, address[1])
    try:
        await server.subscriber("vera", "4915100000008", micros=EUR)
        client = await server.client()
        callee = call_to("4917612345678")
        initial = ccr(
            "call-v", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 120), callee, msisdn="4915100000008"
        )
        assert code(await client.request(initial)) == 2001
        update = ccr(
            "call-v",
            "UPDATE_REQUEST",
            1,
            seconds("Used-Service-Unit", 60),
            seconds("Requested-Service-Unit", 120),
            callee,
            msisdn="4915100000008",
        )
        await asyncio.to_thread(redis_server.stop)
        busy = await client.request(update)
        assert code(busy) == 3004 and busy.is_error
        await asyncio.to_thread(redis_server.start)  # same port, data back from the AOF
        # The client retries the same request (RFC 4006 section 5.7): applied once, as if never refused.
        update.flags |= 0x10
        assert code(await client.request(update)) == 2001
        assert code(await client.request(update)) == 2001
        assert state.store is not None
        usage = {}
        for record in await state.store.usage_records():
            usage[record.account_id] = usage.get(record.account_id, 0) + record.micros
        assert usage == {"vera": 90_000}  # one minute at 0.09, once
        report = await audit(state.store, now_seconds=int(PEAK.timestamp()), usage_micros=usage)
        assert report.findings == []
        view = await state.store.balance("vera", int(PEAK.timestamp()))
        assert view is not None and view.available_micros == EUR - 90_000 - 180_000  # minus 2 minutes held
        await client.close()
    finally:
        await shutdown(state)
        await asyncio.to_thread(redis_server.stop)


async def test_top_up_sends_rar_to_a_session_in_final_unit_state_then_barring_sends_asr(server: RunningServer) -> None:
    await server.subscriber("will", "4915100000009", micros=90_000)  # one minute at peak
    client = await server.client()
    server_requests: list[Message] = []
    client.on_request = lambda _, message: server_requests.append(message)
    callee = call_to("4917612345678")
    initial = await client.request(
        ccr("call-w", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 300), callee, msisdn="4915100000009")
    )
    assert initial.find("Final-Unit-Indication") is not None and initial.find("Granted-Service-Unit") is not None
    state = server.state
    assert state.store is not None and state.notifier is not None
    await state.store.top_up("will", "card-1", 5 * EUR)
    assert state.notifier.account_topped_up("will") == 1
    for _ in range(50):
        if server_requests:
            break
        await asyncio.sleep(0.02)
    (rar,) = server_requests
    assert rar.command_code == 258 and rar.get("Session-Id") == "call-w" and rar.get("Re-Auth-Request-Type") == 0
    # The client re-authorises and gets quota from the new balance, without a final unit.
    update = await client.request(
        ccr(
            "call-w",
            "UPDATE_REQUEST",
            1,
            seconds("Used-Service-Unit", 30),
            seconds("Requested-Service-Unit", 300),
            callee,
            msisdn="4915100000009",
        )
    )
    grant = update.find("Granted-Service-Unit")
    assert code(update) == 2001 and grant is not None and grant.get("CC-Time") == 300
    assert update.find("Final-Unit-Indication") is None
    assert state.notifier.account_blocked("will") == 1
    for _ in range(50):
        if len(server_requests) == 2:
            break
        await asyncio.sleep(0.02)
    assert server_requests[1].command_code == 274 and server_requests[1].get("Session-Id") == "call-w"
    await client.close()


async def test_postpaid_usage_lands_in_the_spool_exactly_once(server: RunningServer) -> None:
    await server.subscriber(
        "paul", "4915100000010", plan="mobile_postpaid", payment_type=PaymentType.POSTPAID, credit_limit_micros=50 * EUR
    )
    client = await server.client()
    callee = call_to("4917612345678")
    initial = ccr(
        "call-p", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 300), callee, msisdn="4915100000010"
    )
    assert code(await client.request(initial)) == 2001
    end = ccr("call-p", "TERMINATION_REQUEST", 1, seconds("Used-Service-Unit", 125), callee, msisdn="4915100000010")
    assert code(await client.request(end)) == 2001
    end.flags |= 0x10
    assert code(await client.request(end)) == 2001  # a retransmission: no second record
    state = server.state
    assert state.spool is not None and state.store is not None
    for _ in range(100):
        if await state.spool.count() >= 1 and not await state.store.usage_records():
            break
        await asyncio.sleep(0.05)
    view = await state.store.balance("paul", int(PEAK.timestamp()))
    assert view is not None and view.unbilled_micros > 0
    assert await state.spool.count() == 1
    assert await state.spool.totals_by_account() == {"paul": view.unbilled_micros}
    await client.close()


async def test_a_suspended_subscriber_is_redirected_to_the_top_up_portal_at_once(server: RunningServer) -> None:
    from balance.types import AccountStatus

    await server.subscriber("xena", "4915100000011", micros=5 * EUR)
    assert server.state.store is not None
    await server.state.store.update("xena", status=AccountStatus.SUSPENDED)
    client = await server.client()
    answer = await client.request(
        ccr(
            "pdp-s",
            "INITIAL_REQUEST",
            0,
            avp("Multiple-Services-Indicator", 1),
            mscc(avp("Rating-Group", 10), octets("Requested-Service-Unit", 1_000_000)),
            msisdn="4915100000011",
            context="32251@3gpp.org",
        )
    )
    assert code(answer) == 2001
    service = services_by_group(answer)[10]
    assert service.get("Result-Code") == 4012 and granted(service, "CC-Total-Octets") == 0
    final_unit = service.find("Final-Unit-Indication")
    assert final_unit is not None and final_unit.get("Final-Unit-Action") == 1  # REDIRECT
    redirect = final_unit.find("Redirect-Server")
    assert redirect is not None and redirect.get("Redirect-Server-Address") == "http://topup.localdomain/"
    assert await balance_of(server, "xena") == 5 * EUR
    await client.close()


# -- issue 17: units, several MSCCs, realm, failed INITIAL, Event-Timestamp -------------------------

DATA = "32251@3gpp.org"
MULTIPLE = avp("Multiple-Services-Indicator", 1)


def rating_group(group: int, *children: Avp, identifier: int | None = None) -> Avp:
    head = [avp("Service-Identifier", identifier)] if identifier is not None else []
    return mscc(*head, avp("Rating-Group", group), *children)


def failed_avps(answer: Message) -> list[Avp]:
    return [failed.children[0] for failed in answer.find_all("Failed-AVP")]


def data_request(session: str, msisdn: str, kind: str, number: int, *services: Avp) -> Message:
    """A Gy CCR with one MSCC per service."""
    return ccr(session, kind, number, MULTIPLE, *services, msisdn=msisdn, context=DATA)


async def records_of(server: RunningServer, account_id: str) -> list[tuple[int, int, int]]:
    """The account's usage records, in the order they were committed: the server's own spool
    writer may already have moved some from the Redis outbox to the database, so every record is
    drained there first and read from there."""
    state = server.state
    assert state.store is not None and state.spool is not None and state.database is not None
    async with state.spool_drain():
        await state.spool.drain_once(state.store)
    table = usage_records
    query = (
        select(table.c.rating_group, table.c.units, table.c.micros)
        .where(table.c.account_id == account_id)
        .order_by(table.c.record_number)
    )
    async with state.database.connect() as connection:
        return [(int(group), int(units), int(micros)) for group, units, micros in await connection.execute(query)]


async def test_usage_in_a_unit_the_tariff_does_not_price_is_refused_never_free(server: RunningServer) -> None:
    await server.subscriber("olga", "4915100000020", micros=EUR)
    client = await server.client()

    def data(session: str, kind: str, number: int, *services: Avp) -> Message:
        return ccr(session, kind, number, MULTIPLE, *services, msisdn="4915100000020", context=DATA)

    # Data (RG 10) is priced per octet: a grant asked in CC-Time only is refused, nothing held.
    asked_time = await client.request(
        data("pdp-t", "INITIAL_REQUEST", 0, rating_group(10, seconds("Requested-Service-Unit", 60)))
    )
    assert code(asked_time) == 5031
    service = services_by_group(asked_time)[10]
    assert service.get("Result-Code") == 5031 and service.find("Granted-Service-Unit") is None
    (failed,) = failed_avps(asked_time)
    assert failed.code == 437 and failed.get("CC-Time") == 60  # Requested-Service-Unit
    assert await balance_of(server, "olga") == EUR
    # A session granted octets, then reporting CC-Time only: each report refused, nothing charged.
    initial = await client.request(
        data("pdp-u", "INITIAL_REQUEST", 0, rating_group(10, octets("Requested-Service-Unit", 1_000_000)))
    )
    assert code(initial) == 2001 and granted(services_by_group(initial)[10], "CC-Total-Octets") == 1_000_000
    held = await balance_of(server, "olga")
    assert held == EUR - 10_000  # 1 MB at 0.01
    for number in (1, 2, 3):
        update = await client.request(
            data("pdp-u", "UPDATE_REQUEST", number, rating_group(10, seconds("Used-Service-Unit", 300)))
        )
        assert code(update) == 5031
        assert services_by_group(update)[10].get("Result-Code") == 5031
        (failed,) = failed_avps(update)
        assert failed.code == 446 and failed.get("CC-Time") == 300  # Used-Service-Unit
        # balance/RULES.md "Refused usage": the first refused report commits the 1 MB reservation
        # in full; the later ones find none, and nothing beyond it is charged.
        assert await balance_of(server, "olga") == held
        assert await records_of(server, "olga") == [(10, 1_000_000, 10_000)]
    end = await client.request(data("pdp-u", "TERMINATION_REQUEST", 4))
    assert code(end) == 2001
    assert await balance_of(server, "olga") == held
    assert await records_of(server, "olga") == [(10, 1_000_000, 10_000)]
    await client.close()


async def test_a_refused_usage_report_commits_the_reservation_never_free(server: RunningServer) -> None:
    """Issue 17 review F3: a CCR-T whose usage came only in CC-Time (data is priced per octet)
    released the whole 1 MB reservation: the megabyte went free. Now the reservation is committed
    in full (balance/RULES.md "Refused usage"), with one usage record; the same when an UPDATE
    reports the refused usage and the CCR-T reports none."""
    await server.subscriber("hugo", "4915100000032", micros=EUR)
    client = await server.client()

    def data(session: str, kind: str, number: int, *services: Avp) -> Message:
        return data_request(session, "4915100000032", kind, number, *services)

    asked = rating_group(10, octets("Requested-Service-Unit", 1_000_000))
    refused = rating_group(10, seconds("Used-Service-Unit", 300))
    for session, requests in (
        ("pdp-t", [("TERMINATION_REQUEST", refused, 5031)]),
        ("pdp-ut", [("UPDATE_REQUEST", refused, 5031), ("TERMINATION_REQUEST", None, 2001)]),
    ):
        before = await balance_of(server, "hugo")
        assert code(await client.request(data(session, "INITIAL_REQUEST", 0, asked))) == 2001
        for number, (kind, service, expected) in enumerate(requests, start=1):
            answer = await client.request(data(session, kind, number, *([service] if service else [])))
            assert code(answer) == expected
            if service is not None:
                assert services_by_group(answer)[10].get("Result-Code") == 5031
        assert await balance_of(server, "hugo") == before - 10_000
        assert [record for record in await records_of(server, "hugo") if record[0] == 10][-1:] == [
            (10, 1_000_000, 10_000)
        ]
    assert len(await records_of(server, "hugo")) == 2
    await client.close()


async def test_an_initial_whose_services_all_fail_differently_opens_no_session(server: RunningServer) -> None:
    """Issue 17 review F5: RG 10 refused for lack of money (4012), RG 999 not rated (5031): the
    CCA-I said 2001 although the engine opened no session (the next CCR-U got 5002) and the
    notifier was told of a session. Now the command fails with the first service's code."""
    await server.subscriber("ines", "4915100000033")  # no money
    client = await server.client()
    asked = [rating_group(group, octets("Requested-Service-Unit", 1_000_000)) for group in (10, 999)]
    initial = await client.request(data_request("pdp-f", "4915100000033", "INITIAL_REQUEST", 0, *asked))
    assert code(initial) == 4012
    services = services_by_group(initial)
    assert services[10].get("Result-Code") == 4012 and services[999].get("Result-Code") == 5031
    assert server.state.notifier is not None and server.state.notifier.open_sessions == 0
    update = data_request("pdp-f", "4915100000033", "UPDATE_REQUEST", 1, asked[0])
    assert code(await client.request(update)) == 5002
    await client.close()


async def test_a_replay_with_fewer_services_than_rated_now_is_5012(server: RunningServer) -> None:
    """A retransmission reaches the engine after the tariff book changed: the stored result has an
    item for RG 10 only (RG 30 could not be rated then), RG 30 is rated now. Answered 5012 by the
    handler, which raised StopIteration; the stored result stands (charged once)."""
    handler = server.state.credit_control
    assert handler is not None
    await server.subscriber("jens", "4915100000034", micros=EUR)
    client = await server.client()

    asked = [rating_group(group, octets("Requested-Service-Unit", 1_000_000)) for group in (10, 30)]

    def initial() -> Message:  # built anew each time: a new End-to-End Identifier, past the cache
        return data_request("pdp-r", "4915100000034", "INITIAL_REQUEST", 0, *asked)

    first = await client.request(initial())
    assert code(first) == 2001 and services_by_group(first)[30].get("Result-Code") == 5031
    tariffs = (ROOT / "config" / "tariffs.toml").read_text()
    groups = 'rating_groups = { 10 = "data", 20 = "video" }'
    handler.book = parse_book(tariffs.replace(groups, 'rating_groups = { 10 = "data", 20 = "video", 30 = "data" }'))
    # Straight to the handler: over TCP the server's last-resort catch (ocs/app.py) also answers
    # 5012, so only here does the StopIteration the handler raised show.
    again = await handler.answer(initial())
    assert code(again) == 5012 and "does not match" in str(again.get("Error-Message"))
    assert await balance_of(server, "jens") == EUR - 10_000
    await client.close()


async def test_common_answers_leave_the_handler_encoded_and_the_others_as_messages(server: RunningServer) -> None:
    """ocs.charging.answer_template: a plain grant is sent as the template wrote it; an answer
    with a Failed-AVP (one service refused) takes the general path, a ``Message`` for the codec."""
    handler = server.state.credit_control
    assert handler is not None
    await server.subscriber("olga", "4915100000035", micros=EUR)
    asked = rating_group(10, octets("Requested-Service-Unit", 1_000_000))
    plain = await handler.respond(data_request("pdp-e", "4915100000035", "INITIAL_REQUEST", 0, asked))
    assert isinstance(plain, EncodedAnswer) and plain.result_code == 2001
    answer = decode(plain.data).message
    assert code(answer) == 2001 and granted(services_by_group(answer)[10], "CC-Total-Octets") == 1_000_000
    unrated = rating_group(999, octets("Requested-Service-Unit", 1_000_000))
    mixed = await handler.respond(data_request("pdp-f", "4915100000035", "INITIAL_REQUEST", 0, asked, unrated))
    assert isinstance(mixed, Message) and code(mixed) == 2001 and len(failed_avps(mixed)) == 1


async def test_a_rating_group_that_cannot_be_rated_fails_alone(server: RunningServer) -> None:
    await server.subscriber("petra", "4915100000021", micros=EUR)
    client = await server.client()
    answer = await client.request(
        ccr(
            "pdp-m",
            "INITIAL_REQUEST",
            0,
            MULTIPLE,
            rating_group(10, octets("Requested-Service-Unit", 1_000_000)),
            rating_group(999, octets("Requested-Service-Unit", 1_000_000)),
            msisdn="4915100000021",
            context=DATA,
        )
    )
    assert code(answer) == 2001 and not answer.is_error
    services = services_by_group(answer)
    assert services[10].get("Result-Code") == 2001 and granted(services[10], "CC-Total-Octets") == 1_000_000
    assert services[999].get("Result-Code") == 5031 and services[999].find("Granted-Service-Unit") is None
    (failed,) = failed_avps(answer)
    assert failed.code == 432 and failed.value == 999  # Rating-Group
    assert await balance_of(server, "petra") == EUR - 10_000  # only RG 10 is held
    await client.close()


async def test_one_rating_group_with_two_service_identifiers_is_two_quotas(server: RunningServer) -> None:
    await server.subscriber("quinn", "4915100000022", micros=EUR)
    client = await server.client()

    def data(kind: str, number: int, *services: Avp) -> Message:
        return ccr("pdp-si", kind, number, MULTIPLE, *services, msisdn="4915100000022", context=DATA)

    initial = await client.request(
        data(
            "INITIAL_REQUEST",
            0,
            rating_group(10, octets("Requested-Service-Unit", 2_000_000), identifier=1),
            rating_group(10, octets("Requested-Service-Unit", 3_000_000), identifier=2),
        )
    )
    assert code(initial) == 2001
    answered = {
        service.get("Service-Identifier"): service for service in initial.find_all("Multiple-Services-Credit-Control")
    }
    assert granted(answered[1], "CC-Total-Octets") == 2_000_000 and answered[1].get("Rating-Group") == 10
    assert granted(answered[2], "CC-Total-Octets") == 3_000_000 and answered[2].get("Rating-Group") == 10
    assert await balance_of(server, "quinn") == EUR - 50_000  # 5 MB at 0.01
    # Each reports its own usage against its own reservation; retransmitted, charged once.
    end = data(
        "TERMINATION_REQUEST",
        1,
        rating_group(10, octets("Used-Service-Unit", 1_000_000), identifier=1),
        rating_group(10, octets("Used-Service-Unit", 2_000_000), identifier=2),
    )
    assert code(await client.request(end)) == 2001
    end.flags |= 0x10
    assert code(await client.request(end)) == 2001
    assert await balance_of(server, "quinn") == EUR - 30_000
    assert sorted((units, micros) for _, units, micros in await records_of(server, "quinn")) == [
        (1_000_000, 10_000),
        (2_000_000, 20_000),
    ]
    # Each usage record names its own Rating-Group and Service-Identifier, apart, in the spool and
    # in the export (before, the pair was packed into one meaningless "rating group").
    exported = await exported_records(server, "quinn", count=2)
    assert sorted((record["rating_group"], record["service_identifier"], record["units"]) for record in exported) == [
        (10, 1, 1_000_000),
        (10, 2, 2_000_000),
    ]
    await client.close()


async def exported_records(server: RunningServer, account_id: str, *, count: int) -> list[dict[str, object]]:
    """The account's usage records as ``ocs cdr export`` writes them (JSON lines), once the spool
    writer has moved ``count`` of them out of the outbox."""
    state = server.state
    assert state.spool is not None and state.store is not None
    for _ in range(200):
        if await state.spool.count() >= count and not await state.store.usage_records():
            break
        await asyncio.sleep(0.05)
    out = io.StringIO()
    await export(state.spool.engine, since=None, until=None, fmt="jsonl", out=out, account_id=account_id)
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_realm_that_is_not_ours_is_3003(server: RunningServer) -> None:
    await server.subscriber("rosa", "4915100000023", micros=EUR)
    client = await server.client()
    callee = call_to("4917612345678")
    request = ccr(
        "call-realm", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), callee, msisdn="4915100000023"
    )
    request.avps = [a for a in request.avps if a.code != 283] + [avp("Destination-Realm", "elsewhere.example")]
    answer = await client.request(request)
    assert code(answer) == 3003 and answer.is_error  # RFC 6733 section 7.1.3: the E bit
    (failed,) = failed_avps(answer)
    assert failed.code == 283 and failed.value == "elsewhere.example"
    assert await balance_of(server, "rosa") == EUR
    # Realms compare without regard to case (DNS names, RFC 4343).
    request.avps = [a for a in request.avps if a.code != 283] + [avp("Destination-Realm", "TEST")]
    assert code(await client.request(request)) == 2001
    await client.close()


async def test_requests_after_a_failed_initial_are_5002(server: RunningServer) -> None:
    await server.subscriber("sven", "4915100000024")  # no money at all
    client = await server.client()
    callee = call_to("4917612345678")

    async def session(name: str, msisdn: str, context: str, asked: Avp, initial_code: int) -> None:
        def request(kind: str, number: int, *units: Avp) -> Message:
            return ccr(name, kind, number, *units, callee, msisdn=msisdn, context=context)

        assert code(await client.request(request("INITIAL_REQUEST", 0, asked))) == initial_code
        update = await client.request(request("UPDATE_REQUEST", 1, asked))
        assert code(update) == 5002
        assert code(await client.request(request("TERMINATION_REQUEST", 2))) == 5002

    await session("call-4012", "4915100000024", "32260@3gpp.org", seconds("Requested-Service-Unit", 60), 4012)
    await session("call-5030", "4900000000", "32260@3gpp.org", seconds("Requested-Service-Unit", 60), 5030)
    await session("pdp-5031", "4915100000024", DATA, seconds("Requested-Service-Unit", 60), 5031)
    assert await records_of(server, "sven") == []
    await client.close()


async def test_an_event_timestamp_far_from_our_clock_is_not_trusted(server: RunningServer) -> None:
    await server.subscriber("tina", "4915100000025", micros=EUR)
    handler = server.state.credit_control
    assert handler is not None
    # Our clock at a Monday peak; the operator's default skew (300 s).
    handler.clock = PEAK.timestamp
    handler.settings = dataclasses.replace(handler.settings, rating=RatingSettings())
    client = await server.client()
    callee = call_to("4917612345678")  # national mobile: 0.09 peak, 0.05 off-peak per minute

    async def price_at(stamp: datetime) -> object:
        request = ccr(
            f"price-{stamp.timestamp()}",
            "EVENT_REQUEST",
            0,
            avp("Requested-Action", "PRICE_ENQUIRY"),
            seconds("Requested-Service-Unit", 60),
            callee,
            msisdn="4915100000025",
        )
        request.avps = [a for a in request.avps if a.code != 55] + [avp("Event-Timestamp", stamp)]
        answer = await client.request(request)
        cost = answer.find("Cost-Information")
        value = cost.find("Unit-Value") if cost is not None else None
        return value.get("Value-Digits") if value is not None else None

    sunday_night = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # off-peak, a day before our clock
    assert await price_at(sunday_night) == 90_000  # rated at our time: peak
    evening = datetime(2026, 11, 23, 19, 59, tzinfo=UTC)  # 20:59 in Berlin, hours ahead: off-peak
    assert await price_at(evening) == 90_000
    assert await price_at(PEAK - timedelta(seconds=299)) == 90_000
    await client.close()


# -- issue 17: Tariff-Time-Change (RFC 4006 section 5.1.1) ------------------------------------------


def _a_monday_ahead_at(hour: int, minute: int) -> datetime:
    """A Monday at least a week ahead, at this time in Berlin. Ahead: the server's Tcc supervision
    reads the real clock, and a reservation made at a handler's clock in the past is already
    overdue, so a slow machine's supervision could close the session before its TERMINATION."""
    day = date.today() + timedelta(days=7)
    day += timedelta(days=-day.weekday() % 7)
    return datetime.combine(day, dt_time(hour, minute), ZoneInfo("Europe/Berlin")).astimezone(UTC)


BEFORE_SIX = _a_monday_ahead_at(17, 59)  # peak ends at 18:00
SIX = BEFORE_SIX + timedelta(minutes=1)
REPORTED = BEFORE_SIX + timedelta(seconds=110)


def used(unit_avp: str, value: int, usage: str | None = None) -> Avp:
    """A Used-Service-Unit, itemised about a tariff change when ``usage`` names the side."""
    change = [avp("Tariff-Change-Usage", usage)] if usage is not None else []
    return avp("Used-Service-Unit", [*change, avp(unit_avp, value)])


def stamped(message: Message, moment: datetime) -> Message:
    message.avps = [a for a in message.avps if a.code != 55] + [avp("Event-Timestamp", moment)]
    return message


def tariff_time_change(answer: Message) -> datetime | None:
    service = answer.find("Multiple-Services-Credit-Control")
    grant = service.find("Granted-Service-Unit") if service is not None else None
    value = grant.get("Tariff-Time-Change") if grant is not None else None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def test_a_call_across_the_end_of_peak_is_charged_at_each_tariff(server: RunningServer) -> None:
    """fixed_prepaid: national fixed calls cost 0.04 a minute until 18:00 and 0.02 after, in
    60/60 increments. Reserved at 17:59:00 for 120 s, the grant carries Tariff-Time-Change 18:00
    and holds two minutes at the dearer price; 60 s before and 45 s after cost one minute at
    0.04 and one (45 s, rounded up at the end of the call) at 0.02: 0.06 in all."""
    await server.subscriber("vera", "4930100000001", micros=EUR, plan="fixed_prepaid")
    handler = server.state.credit_control
    assert handler is not None
    client = await server.client()
    callee = call_to("4930123456")  # national fixed

    def request(session: str, kind: str, number: int, *units: Avp, at: datetime) -> Message:
        message = ccr(session, kind, number, MULTIPLE, mscc(*units), callee, msisdn="4930100000001")
        return stamped(message, at)

    for session, usage in (("itemised", ("UNIT_BEFORE_TARIFF_CHANGE", "UNIT_AFTER_TARIFF_CHANGE")), ("single", None)):
        handler.clock = BEFORE_SIX.timestamp
        initial = await client.request(
            request(session, "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 120), at=BEFORE_SIX)
        )
        assert code(initial) == 2001 and tariff_time_change(initial) == SIX
        assert granted(services_by_group(initial)[-1], "CC-Time") == 120
        assert await balance_of(server, "vera") == EUR - 80_000  # two minutes at 0.04, held
        handler.clock = REPORTED.timestamp
        if usage is not None:
            reports = [used("CC-Time", 60, usage[0]), used("CC-Time", 45, usage[1])]
        else:
            # Not itemised: time is used continuously from the grant, so the first 60 s were
            # before 18:00 (RFC 4006 section 5.1.1): the same price.
            reports = [used("CC-Time", 105)]
        end = await client.request(request(session, "TERMINATION_REQUEST", 1, *reports, at=REPORTED))
        assert code(end) == 2001
        assert await balance_of(server, "vera") == EUR - 60_000
        assert server.state.store is not None
        await server.state.store.top_up("vera", f"again-{session}", 60_000)  # the next call starts at 1.00
    await client.close()


BANDED_DATA = """
[plans.banded]
description = "Data at 0.02 per MB until 18:00 on weekdays, 0.01 after"
currency = "EUR"
time_zone = "Europe/Berlin"
default_band = "off_peak"

[[plans.banded.bands]]
name = "peak"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "18:00"

[plans.banded.contexts."32251@3gpp.org"]
default_service = "data"
rating_groups = { 10 = "data" }

[plans.banded.services.data]
kind = "data"
price = { peak = "0.02", off_peak = "0.01" }
per_octets = 1_000_000
block_octets = 1_000_000
"""


async def test_data_across_the_end_of_peak_is_charged_at_each_tariff(server: RunningServer) -> None:
    """A plan banding data: 5 MB granted at 17:59 hold 0.10 (peak). 2 MB before and 1.5 MB after
    18:00 cost 2 MB at 0.02 and 2 MB (1.5, rounded up at the end) at 0.01: 0.06. Octets are not
    used at a steady rate, so a report that does not itemise them is priced at the dearer side:
    3.5 MB as 4 MB at 0.02, 0.08. A Tariff-Change-Usage RFC 4006 does not define is 5004."""
    handler = server.state.credit_control
    assert handler is not None
    handler.book = parse_book(BANDED_DATA)
    await server.subscriber("wolf", "4915100000030", micros=EUR, plan="banded")
    client = await server.client()

    def request(session: str, kind: str, number: int, *units: Avp, at: datetime) -> Message:
        message = ccr(session, kind, number, MULTIPLE, rating_group(10, *units), msisdn="4915100000030", context=DATA)
        return stamped(message, at)

    cases = (
        (
            "pdp-split",
            [
                used("CC-Total-Octets", 2_000_000, "UNIT_BEFORE_TARIFF_CHANGE"),
                used("CC-Total-Octets", 1_500_000, "UNIT_AFTER_TARIFF_CHANGE"),
            ],
            60_000,
        ),
        ("pdp-single", [used("CC-Total-Octets", 3_500_000)], 80_000),
    )
    for session, reports, micros in cases:
        handler.clock = BEFORE_SIX.timestamp
        initial = await client.request(
            request(session, "INITIAL_REQUEST", 0, octets("Requested-Service-Unit", 5_000_000), at=BEFORE_SIX)
        )
        assert code(initial) == 2001 and tariff_time_change(initial) == SIX
        assert await balance_of(server, "wolf") == EUR - 100_000
        handler.clock = REPORTED.timestamp
        end = await client.request(request(session, "TERMINATION_REQUEST", 1, *reports, at=REPORTED))
        assert code(end) == 2001
        assert await balance_of(server, "wolf") == EUR - micros
        assert server.state.store is not None
        await server.state.store.top_up("wolf", f"again-{session}", micros)

    handler.clock = BEFORE_SIX.timestamp
    odd = avp("Used-Service-Unit", [avp("Tariff-Change-Usage", 7), avp("CC-Total-Octets", 1)])
    answer = await client.request(request("pdp-odd", "INITIAL_REQUEST", 0, odd, at=BEFORE_SIX))
    assert code(answer) == 5004
    (failed,) = failed_avps(answer)
    assert failed.code == 452 and failed.value == 7  # Tariff-Change-Usage
    # After 18:00 the same plan's grant spans no change: no Tariff-Time-Change.
    handler.clock = REPORTED.timestamp
    later = await client.request(
        request("pdp-late", "INITIAL_REQUEST", 0, octets("Requested-Service-Unit", 5_000_000), at=REPORTED)
    )
    assert code(later) == 2001 and tariff_time_change(later) is None
    assert await balance_of(server, "wolf") == EUR - 50_000  # 5 MB at 0.01
    await client.close()
