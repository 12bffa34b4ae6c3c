"""Reading CCRs (ocs.charging.ccr) and laying out CCAs (ocs.charging.cca), without a server: tables of messages."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from balance.directory import Identity, IdentityKind
from balance.types import Unit
from ocs.charging.cca import FinalUnit, FinalUnitAction, ServiceAnswer, credit_answer, error_answer
from ocs.charging.ccr import CcrProblem, CreditRequest, RequestedAction, RequestType, Units, read_ccr, request_time
from protocol.capabilities import LocalIdentity
from protocol.constants import ResultCode
from protocol.message import Avp, Message, avp, request

IDENTITY = LocalIdentity("ocs.test", "test")
AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def ccr(*extra: Avp, request_type: str = "UPDATE_REQUEST") -> Message:
    return request(
        272,
        4,
        [
            avp("Session-Id", "pgw;1;2"),
            avp("Origin-Host", "pgw.test"),
            avp("Origin-Realm", "test"),
            avp("Destination-Realm", "test"),
            avp("Auth-Application-Id", 4),
            avp("Service-Context-Id", "32251@3gpp.org"),
            avp("CC-Request-Type", request_type),
            avp("CC-Request-Number", 7),
            *extra,
        ],
    )


def subscription(kind: int, data: str) -> Avp:
    return avp("Subscription-Id", [avp("Subscription-Id-Type", kind), avp("Subscription-Id-Data", data)])


def mscc(rating_group: int, *members: Avp) -> Avp:
    return avp("Multiple-Services-Credit-Control", [*members, avp("Rating-Group", rating_group)])


def read(message: Message) -> CreditRequest:
    ccr_read = read_ccr(message)
    assert isinstance(ccr_read, CreditRequest), ccr_read
    return ccr_read


def test_multiple_services_with_used_units_reasons_and_money() -> None:
    money = avp("CC-Money", [avp("Unit-Value", [avp("Value-Digits", 125), avp("Exponent", -2)])])
    message = ccr(
        subscription(0, "4915100000001"),
        subscription(9, "not-a-kind"),  # a type we do not know: skipped
        subscription(1, "262011234567890"),
        avp("Multiple-Services-Indicator", 1),
        mscc(
            10,
            avp("Requested-Service-Unit", []),
            avp("Used-Service-Unit", [avp("CC-Input-Octets", 100), avp("CC-Output-Octets", 50)]),
            avp("Used-Service-Unit", [avp("CC-Total-Octets", 7), money, avp("Reporting-Reason", 2)]),
        ),
        mscc(20, avp("Requested-Service-Unit", [avp("CC-Total-Octets", 1_000)]), avp("Reporting-Reason", 0)),
        avp("Event-Timestamp", AT),
    )
    found = read(message)
    assert (found.session_id, found.origin_host, found.origin_realm) == ("pgw;1;2", "pgw.test", "test")
    assert (found.request_type, found.request_number, found.service_context) == (
        RequestType.UPDATE,
        7,
        "32251@3gpp.org",
    )
    assert found.identities == (
        Identity(IdentityKind.E164, "4915100000001"),
        Identity(IdentityKind.IMSI, "262011234567890"),
    )
    assert found.multiple_services and found.event_time == AT and found.requested_action is None
    first, second = found.services
    assert (first.rating_group, first.requested) == (10, Units())
    assert first.used == (
        Units(input_octets=100, output_octets=50),
        Units(total_octets=7, money_micros=1_250_000),
    )
    assert first.used[0].octets == 150 and first.final
    assert (second.rating_group, second.requested, second.used) == (20, Units(total_octets=1_000), ())
    assert second.reporting_reasons == (0,) and not second.final
    assert first.avp is message.avps[-3] and second.avp is message.avps[-2]


def test_single_service_mode_reads_the_command_level_avps() -> None:
    message = ccr(
        subscription(0, "4915100000001"),
        avp("Requested-Service-Unit", [avp("CC-Time", 60)]),
        avp("Used-Service-Unit", [avp("CC-Time", 30)]),
        avp("Rating-Group", 5),  # not an MSCC: single-service requests carry no rating group
        request_type="TERMINATION_REQUEST",
    )
    found = read(message)
    assert not found.multiple_services and found.event_time is None
    (service,) = found.services
    assert service.rating_group is None and service.avp is None
    assert service.requested == Units(time_seconds=60) and service.used == (Units(time_seconds=30),)


def test_the_first_of_a_repeated_avp_counts() -> None:
    found = read(ccr(avp("Session-Id", "second"), avp("CC-Request-Number", 99)))
    assert (found.session_id, found.request_number) == ("pgw;1;2", 7)


def test_contradictions_come_back_as_problems_naming_the_avp() -> None:
    twice = ccr(avp("Multiple-Services-Indicator", 1), mscc(10), mscc(10))
    problem = read_ccr(twice)
    assert isinstance(problem, CcrProblem)
    assert problem.result_code is ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES and problem.failed_avp is twice.avps[-1]
    out_of_range = ccr(request_type="EVENT_REQUEST")
    out_of_range.append(avp("Requested-Action", 9))
    problem = read_ccr(out_of_range)
    assert isinstance(problem, CcrProblem) and problem.failed_avp is out_of_range.avps[-1]
    assert read(ccr(avp("Requested-Action", 2), request_type="EVENT_REQUEST")).requested_action is (
        RequestedAction.CHECK_BALANCE
    )


def test_answers_carry_the_avps_and_flags_avp_builds() -> None:
    message = ccr()
    grant = ServiceAnswer(
        10,
        None,
        ResultCode.DIAMETER_SUCCESS,
        unit=Unit.OCTETS,
        granted_units=1_000,
        validity_seconds=600,
        threshold_units=200,
        quota_holding_seconds=30,
    )
    final = ServiceAnswer(
        20,
        3,
        ResultCode.DIAMETER_SUCCESS,
        unit=Unit.SECONDS,
        granted_units=60,
        final_unit=FinalUnit(FinalUnitAction.REDIRECT, "http://top-up.test"),
    )
    answer = credit_answer(message, IDENTITY, ResultCode.DIAMETER_SUCCESS, [grant, final], multiple_services=True)
    header = [
        message.avps[0],
        avp("Result-Code", 2001),
        avp("Origin-Host", "ocs.test"),
        avp("Origin-Realm", "test"),
        avp("Auth-Application-Id", 4),
        avp("CC-Request-Type", "UPDATE_REQUEST"),
        avp("CC-Request-Number", 7),
    ]
    assert answer.avps == [
        *header,
        avp(
            "Multiple-Services-Credit-Control",
            [
                avp("Granted-Service-Unit", [avp("CC-Total-Octets", 1_000)]),
                avp("Rating-Group", 10),
                avp("Validity-Time", 600),
                avp("Result-Code", 2001),
                avp("Volume-Quota-Threshold", 200),
                avp("Quota-Holding-Time", 30),
            ],
        ),
        avp(
            "Multiple-Services-Credit-Control",
            [
                avp("Granted-Service-Unit", [avp("CC-Time", 60)]),
                avp("Service-Identifier", 3),
                avp("Rating-Group", 20),
                avp("Result-Code", 2001),
                FinalUnit(FinalUnitAction.REDIRECT, "http://top-up.test").to_avp(),
            ],
        ),
    ]
    single = credit_answer(message, IDENTITY, ResultCode.DIAMETER_SUCCESS, [grant], multiple_services=False)
    assert single.avps[len(header) :] == [
        avp("Granted-Service-Unit", [avp("CC-Total-Octets", 1_000)]),
        avp("Rating-Group", 10),
        avp("Validity-Time", 600),
        avp("Volume-Quota-Threshold", 200),
        avp("Quota-Holding-Time", 30),
    ]
    refused = error_answer(message, IDENTITY, ResultCode.DIAMETER_TOO_BUSY)
    assert refused.is_error and refused.avps == [header[0], avp("Result-Code", 3004), *header[2:]]


def test_the_called_party_comes_from_ims_or_sms_information() -> None:
    ims = avp(
        "Service-Information",
        [avp("IMS-Information", [avp("Node-Functionality", "AS"), avp("Called-Party-Address", "tel:+4930901820")])],
    )
    recipient = avp("Recipient-Info", [avp("Recipient-Address", [avp("Address-Data", "4917612345678")])])
    sms = avp("Service-Information", [avp("SMS-Information", [recipient])])
    assert read(ccr(ims)).called_party == "tel:+4930901820"
    assert read(ccr(sms)).called_party == "4917612345678"
    assert read(ccr()).called_party is None


@pytest.mark.parametrize(
    ("request_type", "offset_seconds", "trusted"),
    [
        (RequestType.INITIAL, -300, True),
        (RequestType.INITIAL, -301, False),  # a start of service five minutes in the past: our clock
        (RequestType.EVENT, -301, False),
        (RequestType.INITIAL, 300, True),
        (RequestType.UPDATE, 301, False),  # no request reports the future
        (RequestType.UPDATE, -3_900, True),  # a report may lag by Tcc (3,600 s) + skew
        (RequestType.TERMINATION, -3_900, True),  # e.g. a CCR-T retransmitted after failover
        (RequestType.TERMINATION, -3_901, False),
        (RequestType.TERMINATION, -6 * 86_400, False),  # last Sunday night, on a Monday: our clock
    ],
)
def test_event_timestamp_is_trusted_within_the_skew_and_late_reports_within_tcc(
    request_type: RequestType, offset_seconds: int, trusted: bool
) -> None:
    now = AT.timestamp()
    stamp = AT + timedelta(seconds=offset_seconds)
    ccr_read = dataclasses.replace(read(ccr()), request_type=request_type, event_time=stamp)
    at = request_time(ccr_read, now, skew_seconds=300, late_seconds=3_600)
    assert at == (stamp if trusted else AT)
    assert request_time(dataclasses.replace(ccr_read, event_time=None), now, skew_seconds=300, late_seconds=0) == AT
