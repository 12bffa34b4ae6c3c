"""The charging server end to end with python-diameter 0.9.0 (import ``diameter``) as the client.

Theory of operation: the whole OCS runs on port 0 over a private Redis (the ``server`` fixture of
``tests/ocs/conftest.py``). The other end is an independent stack: python-diameter's own ``Node``
(its sockets, threads and CER/CEA) connects over real TCP on loopback, every CCR is built with its
``CreditControlRequest`` class and grouped-AVP dataclasses and sent with its
``Application.send_request``, and every assertion is on the CCA as python-diameter decoded it,
plus the money in Redis. No scenario needed a raw socket: the Node is used throughout, one per
test because the server (and its port) is per test; ``Node.stop`` costs about 2 s, so each test
runs a whole scenario on its one Node.

python-diameter blocks its caller until the answer comes, while our server runs on the test's
event loop, so each request goes through ``asyncio.to_thread``.

Known disagreement, tolerated on purpose: python-diameter 0.9.0 sends Origin-Host and
Origin-Realm with the M bit clear, where RFC 6733 section 4.5 sets it. The CCRs here go out as
python-diameter builds them, so these tests also prove our server accepts that (RFC 6733 section
4.1: an AVP the receiver understands is processed whatever its M bit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from diameter.message import constants as their_constants
from diameter.message.avp.grouped import (
    CcMoney,
    ImsInformation,
    MultipleServicesCreditControl,
    RecipientAddress,
    RecipientInfo,
    RequestedServiceUnit,
    ServiceInformation,
    SmsInformation,
    UnitValue,
    UsedServiceUnit,
)
from diameter.message.commands import CreditControlAnswer, CreditControlRequest
from diameter.node.application import Application

from balance.types import Bucket, BucketKind
from tests.ocs.conftest import CLIENT, RunningServer
from tests.protocol.interop_support import (
    EXCHANGE_TIMEOUT_SECONDS,
    ClientNode,
    connect_client_node,
    stop_client_node,
)

SERVER_HOST = "ocs.test"  # tests/ocs/conftest.py server_settings
SERVER_REALM = "test"
PEAK = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Berlin: peak
EUR = 1_000_000  # micros
CALLEE = "4917612345678"  # national mobile: 0.09 per minute at peak (60/1), 0.09 per SMS
VOICE = "32260@3gpp.org"  # TS 32.299 section 7.1.12: IMS
DATA = "32251@3gpp.org"  # PS
SMS = "32274@3gpp.org"  # SMS
NODE_FUNCTIONALITY_AS = 6  # TS 32.299 section 7.2.118
INITIAL = their_constants.E_CC_REQUEST_TYPE_INITIAL_REQUEST
UPDATE = their_constants.E_CC_REQUEST_TYPE_UPDATE_REQUEST
TERMINATION = their_constants.E_CC_REQUEST_TYPE_TERMINATION_REQUEST
EVENT = their_constants.E_CC_REQUEST_TYPE_EVENT_REQUEST
# RFC 4006 section 8.41 (Requested-Action), 8.6 (Check-Balance-Result), 8.35 (Final-Unit-Action)
DIRECT_DEBITING, REFUND_ACCOUNT, CHECK_BALANCE, PRICE_ENQUIRY = 0, 1, 2, 3
ENOUGH_CREDIT, NO_CREDIT = 0, 1
TERMINATE = 0
EURO = 978  # ISO 4217, Currency-Code (RFC 4006 section 8.11)


@dataclass
class TheirClient:
    """python-diameter's Node and its credit-control Application, connected to our server."""

    node: ClientNode
    application: Application

    def session(self) -> str:
        return str(self.node.session_generator.next_id())

    async def send(self, request: CreditControlRequest) -> CreditControlAnswer:
        answer = await asyncio.to_thread(self.application.send_request, request, EXCHANGE_TIMEOUT_SECONDS)
        assert isinstance(answer, CreditControlAnswer)
        # RFC 6733 section 6.2: the answer carries the request's identifiers; RFC 4006 section 3.2:
        # and its Session-Id, CC-Request-Type and CC-Request-Number.
        assert answer.header.end_to_end_identifier == request.header.end_to_end_identifier
        assert answer.header.hop_by_hop_identifier == request.header.hop_by_hop_identifier
        assert (answer.session_id, answer.cc_request_type, answer.cc_request_number) == (
            request.session_id,
            request.cc_request_type,
            request.cc_request_number,
        )
        assert (answer.origin_host, answer.origin_realm, answer.auth_application_id) == (b"ocs.test", b"test", 4)
        return answer


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[TheirClient]:
    node, _, application = await connect_client_node(server.port, SERVER_HOST, SERVER_REALM, CLIENT.origin_host)
    try:
        yield TheirClient(node, application)
    finally:
        await stop_client_node(node)  # before the server fixture shuts the server down


def ccr(
    session_id: str,
    request_type: int,
    number: int,
    msisdn: str,
    context: str,
    *,
    services: tuple[MultipleServicesCreditControl, ...] = (),
    requested: RequestedServiceUnit | None = None,
    used: UsedServiceUnit | None = None,
    action: int | None = None,
    information: ServiceInformation | None = None,
) -> CreditControlRequest:
    """A CCR as python-diameter builds it (RFC 4006 section 3.1 and TS 32.299 section 6.4.2)."""
    request = CreditControlRequest()
    request.session_id = session_id
    request.origin_host = CLIENT.origin_host.encode()
    request.origin_realm = CLIENT.origin_realm.encode()
    request.destination_realm = SERVER_REALM.encode()
    request.auth_application_id = 4  # RFC 4006 section 1.3
    request.service_context_id = context
    request.cc_request_type = request_type
    request.cc_request_number = number
    request.event_timestamp = PEAK
    request.add_subscription_id(their_constants.E_SUBSCRIPTION_ID_TYPE_END_USER_E164, msisdn)
    if services:
        request.multiple_services_indicator = 1  # MULTIPLE_SERVICES_SUPPORTED, RFC 4006 section 8.40
        request.multiple_services_credit_control = list(services)
    if requested is not None:
        request.requested_service_unit = requested
    if used is not None:
        request.used_service_unit = used
    if action is not None:
        request.requested_action = action
    if information is not None:
        request.service_information = information
    return request


def call_to(number: str) -> ServiceInformation:
    return ServiceInformation(
        ims_information=ImsInformation(node_functionality=NODE_FUNCTIONALITY_AS, called_party_address=f"tel:+{number}")
    )


def sms_to(number: str) -> ServiceInformation:
    recipient = RecipientInfo(recipient_address=[RecipientAddress(address_data=number)])
    return ServiceInformation(sms_information=SmsInformation(recipient_info=[recipient]))


async def available(server: RunningServer, account_id: str) -> int:
    assert server.state.store is not None
    view = await server.state.store.balance(account_id, int(PEAK.timestamp()))
    assert view is not None
    return view.available_micros


def by_group(answer: CreditControlAnswer) -> dict[int, MultipleServicesCreditControl]:
    return {service.rating_group: service for service in answer.multiple_services_credit_control}


async def test_prepaid_voice_call_until_the_balance_runs_out(server: RunningServer, client: TheirClient) -> None:
    await server.subscriber("alice", "4915100000001", micros=300_000)  # 0.30 EUR
    session = client.session()

    def call(request_type: int, number: int, *units: UsedServiceUnit | RequestedServiceUnit) -> CreditControlRequest:
        services = (
            MultipleServicesCreditControl(
                requested_service_unit=next((u for u in units if isinstance(u, RequestedServiceUnit)), None),
                used_service_unit=[u for u in units if isinstance(u, UsedServiceUnit)],
            ),
        )
        return ccr(
            session,
            request_type,
            number,
            "4915100000001",
            VOICE,
            services=services if units else (),
            information=call_to(CALLEE),
        )

    # 0.30 at 0.09 per minute, 60/1, affords 200 s of the 300 asked: the final units.
    initial = await client.send(call(INITIAL, 0, RequestedServiceUnit(cc_time=300)))
    assert initial.result_code == 2001
    (service,) = initial.multiple_services_credit_control
    assert service.granted_service_unit.cc_time == 200
    assert service.final_unit_indication.final_unit_action == TERMINATE
    # All 200 s used and more asked: nothing left, 4012 for the service and the command.
    update = await client.send(call(UPDATE, 1, UsedServiceUnit(cc_time=200), RequestedServiceUnit(cc_time=300)))
    assert update.result_code == 4012  # DIAMETER_CREDIT_LIMIT_REACHED, RFC 4006 section 9.1
    (service,) = update.multiple_services_credit_control
    assert service.result_code == 4012 and service.granted_service_unit is None
    end = await client.send(call(TERMINATION, 2))
    assert end.result_code == 2001
    assert server.state.store is not None
    view = await server.state.store.balance("alice", int(PEAK.timestamp()))
    assert view is not None and (view.available_micros, view.committed_micros, view.held_micros) == (0, 300_000, 0)


async def test_data_session_with_two_rating_groups_and_an_octets_allowance(
    server: RunningServer, client: TheirClient
) -> None:
    allowance = Bucket(2, BucketKind.OCTETS, 5_000_000, ("data",))
    await server.subscriber("dana", "4915100000002", micros=EUR, buckets=(allowance,))
    session = client.session()
    asked = (
        MultipleServicesCreditControl(
            rating_group=10, requested_service_unit=RequestedServiceUnit(cc_total_octets=8_000_000)
        ),
        MultipleServicesCreditControl(
            rating_group=20, requested_service_unit=RequestedServiceUnit(cc_total_octets=2_000_000)
        ),
    )
    initial = await client.send(ccr(session, INITIAL, 0, "4915100000002", DATA, services=asked))
    assert initial.result_code == 2001
    services = by_group(initial)
    assert services.keys() == {10, 20}
    assert services[10].granted_service_unit.cc_total_octets == 8_000_000
    assert services[20].granted_service_unit.cc_total_octets == 2_000_000
    assert (services[10].validity_time, services[10].volume_quota_threshold) == (1800, 1_600_000)
    assert services[10].result_code == services[20].result_code == 2001
    assert services[10].final_unit_indication is None
    # RG 10 (data, 0.01/MB): 5 MB from the allowance, 3 MB = 0.03 held; RG 20 (video, 0.005/MB): 0.01 held.
    assert await available(server, "dana") == 960_000
    used = (
        MultipleServicesCreditControl(rating_group=10, used_service_unit=[UsedServiceUnit(cc_total_octets=6_000_000)]),
        MultipleServicesCreditControl(rating_group=20, used_service_unit=[UsedServiceUnit(cc_total_octets=1_000_000)]),
    )
    end = await client.send(ccr(session, TERMINATION, 1, "4915100000002", DATA, services=used))
    assert end.result_code == 2001
    # 6 MB of RG 10: 5 MB allowance + 1 MB = 0.01; 1 MB of RG 20 = 0.005; the holds released.
    assert await available(server, "dana") == 985_000
    assert server.state.store is not None
    view = await server.state.store.balance("dana", int(PEAK.timestamp()))
    assert view is not None and view.held_micros == 0


async def test_sms_as_a_direct_debit_event_and_as_ecur(server: RunningServer, client: TheirClient) -> None:
    await server.subscriber("sam", "4915100000003", micros=200_000)
    one_sms = RequestedServiceUnit(cc_service_specific_units=1)

    def direct_debit() -> CreditControlRequest:
        return ccr(
            client.session(),
            EVENT,
            0,
            "4915100000003",
            SMS,
            requested=one_sms,
            action=DIRECT_DEBITING,
            information=sms_to(CALLEE),
        )

    # IEC (TS 32.299 section 6.3.3): one SMS at 0.09, debited at once.
    event = await client.send(direct_debit())
    assert event.result_code == 2001
    assert await available(server, "sam") == 110_000
    # ECUR (section 6.3.5): reserved on INITIAL, committed on TERMINATION.
    session = client.session()
    initial = await client.send(
        ccr(session, INITIAL, 0, "4915100000003", SMS, requested=one_sms, information=sms_to(CALLEE))
    )
    assert initial.result_code == 2001 and initial.granted_service_unit.cc_service_specific_units == 1
    assert await available(server, "sam") == 20_000
    used = UsedServiceUnit(cc_service_specific_units=1)
    end = await client.send(ccr(session, TERMINATION, 1, "4915100000003", SMS, used=used, information=sms_to(CALLEE)))
    assert end.result_code == 2001
    assert await available(server, "sam") == 20_000
    # A third SMS is more than the 0.02 left affords.
    refused = await client.send(direct_debit())
    assert refused.result_code == 4012 and refused.granted_service_unit is None
    assert await available(server, "sam") == 20_000


async def test_check_balance_price_enquiry_and_refund(server: RunningServer, client: TheirClient) -> None:
    await server.subscriber("pete", "4915100000004", micros=100_000)

    def event(session_id: str, action: int, requested: RequestedServiceUnit) -> CreditControlRequest:
        return ccr(
            session_id,
            EVENT,
            0,
            "4915100000004",
            VOICE,
            requested=requested,
            action=action,
            information=call_to(CALLEE),
        )

    # RFC 4006 section 6.4: 60 s cost 0.09, affordable; 120 s cost 0.18, not.
    enough = await client.send(event(client.session(), CHECK_BALANCE, RequestedServiceUnit(cc_time=60)))
    assert enough.result_code == 2001 and enough.check_balance_result == ENOUGH_CREDIT
    too_much = await client.send(event(client.session(), CHECK_BALANCE, RequestedServiceUnit(cc_time=120)))
    assert too_much.result_code == 2001 and too_much.check_balance_result == NO_CREDIT
    # Section 6.5: 90 s cost 0.135, in micros.
    price = await client.send(event(client.session(), PRICE_ENQUIRY, RequestedServiceUnit(cc_time=90)))
    assert price.result_code == 2001
    cost = price.cost_information
    assert (cost.unit_value.value_digits, cost.unit_value.exponent, cost.currency_code) == (135_000, -6, EURO)
    assert await available(server, "pete") == 100_000  # asking changes nothing
    # Section 6.3 / 6.4: refund 0.25 EUR. Built twice, so python-diameter gives each its own
    # End-to-End Identifier: only (Session-Id, CC-Request-Number) makes them the same refund.
    refund_session = client.session()
    money = CcMoney(unit_value=UnitValue(value_digits=25, exponent=-2), currency_code=EURO)
    first = event(refund_session, REFUND_ACCOUNT, RequestedServiceUnit(cc_money=money))
    again = event(refund_session, REFUND_ACCOUNT, RequestedServiceUnit(cc_money=money))
    assert (await client.send(first)).result_code == (await client.send(again)).result_code == 2001
    assert first.header.end_to_end_identifier != again.header.end_to_end_identifier
    assert server.state.diameter is not None and server.state.diameter.duplicates.hits == 0  # not the cache
    assert await available(server, "pete") == 350_000


async def test_unknown_subscriber_and_a_retransmitted_update(server: RunningServer, client: TheirClient) -> None:
    # RFC 4006 section 9.1: DIAMETER_USER_UNKNOWN, with the Subscription-Id as Failed-AVP.
    unknown = await client.send(ccr(client.session(), INITIAL, 0, "4900000000", VOICE, information=call_to(CALLEE)))
    assert unknown.result_code == 5030 and not unknown.header.is_error
    (failed_avp,) = unknown.failed_avp  # RFC 4006 section 3.2: *[ Failed-AVP ]
    (failed,) = failed_avp.additional_avps
    assert failed.code == 443  # Subscription-Id

    await server.subscriber("rita", "4915100000005", micros=EUR)
    session = client.session()
    initial = await client.send(
        ccr(
            session,
            INITIAL,
            0,
            "4915100000005",
            VOICE,
            requested=RequestedServiceUnit(cc_time=120),
            information=call_to(CALLEE),
        )
    )
    assert initial.result_code == 2001 and initial.granted_service_unit.cc_time == 120
    update = ccr(
        session,
        UPDATE,
        1,
        "4915100000005",
        VOICE,
        used=UsedServiceUnit(cc_time=120),
        requested=RequestedServiceUnit(cc_time=120),
        information=call_to(CALLEE),
    )
    first = await client.send(update)
    assert first.result_code == 2001 and first.granted_service_unit.cc_time == 120
    # 120 s used = 0.18 committed, another 120 s = 0.18 held.
    assert await available(server, "rita") == EUR - 180_000 - 180_000
    # RFC 6733 section 5.5.4: after a failover the client sends the request again with the T flag,
    # the same End-to-End Identifier and a new Hop-by-Hop Identifier (0 lets the Node pick one).
    end_to_end, hop_by_hop = update.header.end_to_end_identifier, update.header.hop_by_hop_identifier
    update.header.is_retransmit = True
    update.header.hop_by_hop_identifier = 0
    again = await client.send(update)
    resent = client.node.sent[-1]
    assert resent.header.is_retransmit and resent.header.end_to_end_identifier == end_to_end
    assert resent.header.hop_by_hop_identifier != hop_by_hop
    assert (again.result_code, again.granted_service_unit.cc_time, again.cc_request_number) == (2001, 120, 1)
    assert await available(server, "rita") == EUR - 180_000 - 180_000  # charged once
    # Answered from the duplicate cache (RFC 6733 section 6.1), not charged again and re-answered.
    assert server.state.diameter is not None and server.state.diameter.duplicates.hits == 1
