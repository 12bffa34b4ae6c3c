"""``read_ccr`` against the reader it replaced (tests/ocs/ccr_reference.py), over CCRs drawn by
hypothesis: repeated and missing AVPs, values of the wrong type, out-of-range enumerations,
Tariff-Change-Usage values RFC 4006 does not define, the same service twice, single- and
multiple-service requests, CC-Money, IMS and SMS Service-Information. Both must return equal
values, and a problem must name the very AVP object the reference names."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.charging.ccr import CcrProblem, read_ccr, read_units
from protocol.message import Avp, Message, avp, request
from tests.ocs.ccr_reference import reference_read_ccr, reference_read_units

_SMALL = st.integers(min_value=-2, max_value=6)
_TEXT = st.sampled_from(["", "a", "pgw;1;2", "4915100000001"])
# A value of the wrong type for an integer AVP: what a hand-built message (not the decoder) may carry.
_ODD = st.sampled_from([b"\x00\x00\x00\x01", "1", True])


def _made(name: str, value: object) -> Avp:
    """The AVP with any value (``avp`` would read a string as an enumeration's name)."""
    made = avp(name, 0)
    return Avp(made.code, made.flags, made.vendor_id, value)  # type: ignore[arg-type]


def _integer(name: str, values: st.SearchStrategy[int] = _SMALL) -> st.SearchStrategy[Avp]:
    return st.one_of(values, _ODD).map(lambda value: _made(name, value))


def _text(name: str) -> st.SearchStrategy[Avp]:
    return st.one_of(_TEXT, st.just(b"raw")).map(lambda value: _made(name, value))


def _grouped(name: str, members: st.SearchStrategy[Avp], size: int = 4) -> st.SearchStrategy[Avp]:
    return st.lists(members, max_size=size).map(lambda children: avp(name, children))


_MONEY = _grouped(
    "CC-Money",
    st.one_of(
        _grouped("Unit-Value", st.one_of(_integer("Value-Digits", st.integers(0, 10**6)), _integer("Exponent"))),
        _integer("Currency-Code"),
    ),
)
_UNIT_MEMBERS = st.one_of(
    _integer("CC-Time", st.integers(0, 3600)),
    _integer("CC-Total-Octets", st.integers(0, 10**9)),
    _integer("CC-Input-Octets", st.integers(0, 10**9)),
    _integer("CC-Output-Octets", st.integers(0, 10**9)),
    _integer("CC-Service-Specific-Units", st.integers(0, 100)),
    _integer("Tariff-Change-Usage", st.integers(-1, 3)),
    _integer("Reporting-Reason"),
    _MONEY,
)
_SERVICE_MEMBERS = st.one_of(
    _grouped("Requested-Service-Unit", _UNIT_MEMBERS),
    _grouped("Used-Service-Unit", _UNIT_MEMBERS),
    _integer("Rating-Group", st.integers(0, 3)),
    _integer("Service-Identifier", st.integers(0, 2)),
    _integer("Reporting-Reason"),
)
_SUBSCRIPTION = _grouped(
    "Subscription-Id", st.one_of(_integer("Subscription-Id-Type"), _text("Subscription-Id-Data")), size=3
)
_INFORMATION = _grouped(
    "Service-Information",
    st.one_of(
        _grouped("IMS-Information", st.one_of(_text("Called-Party-Address"), _text("Calling-Party-Address"))),
        _grouped(
            "SMS-Information",
            _grouped("Recipient-Info", _grouped("Recipient-Address", _text("Address-Data"), size=2), size=2),
            size=2,
        ),
    ),
    size=2,
)
_COMMAND_AVPS = st.one_of(
    _text("Session-Id"),
    _text("Origin-Host"),
    _text("Origin-Realm"),
    _text("Destination-Realm"),
    _text("Service-Context-Id"),
    _integer("CC-Request-Type"),
    _integer("CC-Request-Number", st.integers(0, 2**32)),
    _integer("Requested-Action"),
    _integer("Multiple-Services-Indicator", st.integers(0, 2)),
    st.just(avp("Event-Timestamp", datetime(2026, 3, 2, 10, 0, tzinfo=UTC))),
    _SUBSCRIPTION,
    _INFORMATION,
    _grouped("Multiple-Services-Credit-Control", _SERVICE_MEMBERS, size=5),
    _SERVICE_MEMBERS,
)


@st.composite
def _ccrs(draw: st.DrawFn) -> Message:
    # Most draws are a plausible request (a valid type, the indicator set) with odd AVPs around it.
    lead = [avp("CC-Request-Type", draw(st.integers(1, 4)))] if draw(st.booleans()) else []
    if draw(st.booleans()):
        lead.append(avp("Multiple-Services-Indicator", 1))
    return request(272, 4, [*lead, *draw(st.lists(_COMMAND_AVPS, max_size=12))])


@settings(max_examples=1500, deadline=None)
@given(_ccrs())
def test_read_ccr_reads_as_the_reference_does(message: Message) -> None:
    found = read_ccr(message)
    expected = reference_read_ccr(message)
    assert found == expected
    if isinstance(expected, CcrProblem):
        assert isinstance(found, CcrProblem) and found.failed_avp is expected.failed_avp


@settings(max_examples=300, deadline=None)
@given(_grouped("Used-Service-Unit", _UNIT_MEMBERS, size=8))
def test_read_units_reads_as_the_reference_does(unit: Avp) -> None:
    assert read_units(unit) == reference_read_units(unit)
