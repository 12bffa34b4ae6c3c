"""The CCAs written from prepared parts (ocs.charging.answer_template) against the general path
(ocs.charging.cca.credit_answer, then the codec): the same bytes for every answer the template
lays out, and None, the general path's turn, for every other."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance.types import Unit
from ocs.charging.answer_template import AnswerTemplate
from ocs.charging.cca import FinalUnit, FinalUnitAction, ServiceAnswer, credit_answer
from protocol.capabilities import LocalIdentity
from protocol.codec import decode, encode
from protocol.constants import ResultCode
from protocol.errors import EncodeError
from protocol.message import Avp, Message, avp, request

IDENTITY = LocalIdentity("ocs.operator.test", "operator.test")
TEMPLATE = AnswerTemplate(IDENTITY)
SUCCESS = ResultCode.DIAMETER_SUCCESS


def ccr(*, session: Avp | None = None, number: int = 7, flags: int | None = None) -> Message:
    message = request(
        272,
        4,
        [
            session or avp("Session-Id", "pgw01.operator.net;1690000000;42;0"),
            avp("Origin-Host", "pgw01.operator.net"),
            avp("Origin-Realm", "operator.net"),
            avp("Destination-Realm", "operator.test"),
            avp("Auth-Application-Id", 4),
            avp("Service-Context-Id", "32251@3gpp.org"),
            avp("CC-Request-Type", "UPDATE_REQUEST"),
            avp("CC-Request-Number", number),
            avp("Multiple-Services-Indicator", 1),
        ],
        hop_by_hop=0xDEADBEEF,
        end_to_end=0x12345678,
    )
    if flags is not None:
        message.flags = flags
    return message


def grant(rating_group: int | None, unit: Unit, granted: int, **fields: object) -> ServiceAnswer:
    values: dict[str, object] = {
        "validity_seconds": 1800,
        "threshold_units": granted // 5,
        "quota_holding_seconds": 60,
        **fields,
    }
    return ServiceAnswer(rating_group, None, SUCCESS, unit=unit, granted_units=granted, **values)  # type: ignore[arg-type]


def both(
    message: Message, code: int, services: list[ServiceAnswer], *, multiple_services: bool = True
) -> tuple[bytes, bytes]:
    general = encode(credit_answer(message, IDENTITY, ResultCode(code), services, multiple_services=multiple_services))
    templated = TEMPLATE.credit_answer(message, code, services, multiple_services=multiple_services)
    assert templated is not None, "the template left a common answer to the general path"
    assert templated.hop_by_hop == message.hop_by_hop and templated.result_code == code and not templated.is_error
    return templated.data, general


COMMON: dict[str, tuple[Message, int, list[ServiceAnswer], bool]] = {
    "two data grants": (
        ccr(),
        SUCCESS,
        [grant(10, Unit.OCTETS, 1_000_000), grant(20, Unit.OCTETS, 5_000_000_000)],
        True,
    ),
    "voice with a Service-Identifier": (
        ccr(),
        SUCCESS,
        [ServiceAnswer(None, 1000, SUCCESS, unit=Unit.SECONDS, granted_units=600, validity_seconds=1800)],
        True,
    ),
    "an event charged": (
        ccr(),
        SUCCESS,
        [ServiceAnswer(7, None, SUCCESS, unit=Unit.EVENTS, granted_units=1)],
        True,
    ),
    "a grant of nothing and a refusal": (
        ccr(),
        SUCCESS,
        [grant(10, Unit.OCTETS, 0, threshold_units=0), ServiceAnswer(30, None, ResultCode.DIAMETER_RATING_FAILED)],
        True,
    ),
    "every service out of credit": (
        ccr(),
        ResultCode.DIAMETER_CREDIT_LIMIT_REACHED,
        [ServiceAnswer(10, None, ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)],
        True,
    ),
    "a termination": (ccr(number=2**32 - 1), SUCCESS, [], True),
    "single-service mode": (ccr(), SUCCESS, [grant(None, Unit.SECONDS, 300)], False),
    "single-service mode, no grant": (ccr(), SUCCESS, [], False),
    "a Session-Id of every width, without its M bit": (
        ccr(session=Avp(263, 0, 0, "pgw;é€𝄞;1")),
        SUCCESS,
        [grant(10, Unit.OCTETS, 2**64 - 1, threshold_units=2**32 - 1)],
        True,
    ),
    "a request without the P bit": (ccr(flags=0x80), SUCCESS, [grant(10, Unit.EVENTS, 3)], True),
}


@pytest.mark.parametrize("case", COMMON, ids=list(COMMON))
def test_a_common_answer_is_the_general_paths_bytes(case: str) -> None:
    message, code, services, multiple_services = COMMON[case]
    templated, general = both(message, code, services, multiple_services=multiple_services)
    assert templated == general
    assert decode(templated).message == decode(general).message


units = st.sampled_from([None, Unit.SECONDS, Unit.OCTETS, Unit.EVENTS])
optional_id = st.none() | st.integers(0, 2**32 - 1)
codes = st.sampled_from([SUCCESS, ResultCode.DIAMETER_CREDIT_LIMIT_REACHED, ResultCode.DIAMETER_RATING_FAILED])
service_answers = st.builds(
    ServiceAnswer,
    optional_id,
    optional_id,
    codes,
    unit=units,
    granted_units=st.integers(0, 2**32 - 1),
    validity_seconds=st.integers(0, 2**32 - 1),
    threshold_units=st.integers(0, 2**32 - 1),
    quota_holding_seconds=st.integers(0, 2**32 - 1),
)


@given(
    st.lists(service_answers, max_size=4),
    st.booleans(),
    st.text(min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
)
def test_any_answer_of_the_common_shape_is_the_general_paths_bytes(
    services: list[ServiceAnswer], multiple_services: bool, session: str, number: int
) -> None:
    session = session.encode("utf-8", "replace").decode()  # no lone surrogates: those fall back
    code = int(ResultCode.DIAMETER_SUCCESS if not services else services[0].result_code)
    templated, general = both(
        ccr(session=avp("Session-Id", session), number=number), code, services, multiple_services=multiple_services
    )
    assert templated == general


FALLBACK: dict[str, tuple[Message, list[ServiceAnswer]]] = {
    "a Final-Unit-Indication": (
        ccr(),
        [grant(10, Unit.OCTETS, 1000, final_unit=FinalUnit(FinalUnitAction.TERMINATE), threshold_units=0)],
    ),
    "a Tariff-Time-Change": (ccr(), [grant(10, Unit.SECONDS, 600, tariff_time_change=1_790_000_000)]),
    "a grant beyond CC-Time's range": (ccr(), [grant(10, Unit.SECONDS, 2**32, threshold_units=0)]),
    "a negative Rating-Group": (ccr(), [grant(-1, Unit.OCTETS, 1000)]),
    "a Session-Id with the V bit": (ccr(session=Avp(263, 0xC0, 0, "pgw;1")), [grant(10, Unit.OCTETS, 1)]),
    "a Session-Id of payload bytes": (ccr(session=Avp(263, 0x40, 0, b"pgw;\xff")), [grant(10, Unit.OCTETS, 1)]),
    "a Session-Id with a lone surrogate": (ccr(session=avp("Session-Id", "pgw;\udc80")), []),
    "a CC-Request-Number out of range": (ccr(number=2**32), []),
}


@pytest.mark.parametrize("case", FALLBACK, ids=list(FALLBACK))
def test_other_answers_are_left_to_the_general_path(case: str) -> None:
    message, services = FALLBACK[case]
    assert TEMPLATE.credit_answer(message, SUCCESS, services, multiple_services=True) is None
    general = credit_answer(message, IDENTITY, SUCCESS, services, multiple_services=True)
    try:
        encoded = encode(general)
    except EncodeError:
        return  # what the peer always did with it: the general path's answer, as before
    assert decode(encoded).message == general or case.startswith("a Session-Id")


def test_an_unusual_service_anywhere_sends_the_whole_answer_the_general_way() -> None:
    last = grant(20, Unit.OCTETS, 1000, final_unit=FinalUnit(FinalUnitAction.TERMINATE))
    assert TEMPLATE.credit_answer(ccr(), SUCCESS, [grant(10, Unit.OCTETS, 1000), last], multiple_services=True) is None


def test_an_answer_over_the_size_limit_is_left_to_the_general_path() -> None:
    services = [grant(group, Unit.OCTETS, 1000) for group in range(200_000)]
    assert TEMPLATE.credit_answer(ccr(), SUCCESS, services, multiple_services=True) is None
    with pytest.raises(EncodeError):
        encode(credit_answer(ccr(), IDENTITY, SUCCESS, services, multiple_services=True))
