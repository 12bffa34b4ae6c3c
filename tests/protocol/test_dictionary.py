"""The dictionary data: loads, refuses inconsistencies, and carries the spec's codes."""

from __future__ import annotations

import pytest

from protocol.avp_types import AvpType
from protocol.constants import AvpFlag
from protocol.dictionary import DEFAULT_DICTIONARY, load_dictionary, parse_rule

D = DEFAULT_DICTIONARY
M = int(AvpFlag.MANDATORY)
V = int(AvpFlag.VENDOR)


@pytest.mark.parametrize(
    ("name", "code", "vendor", "avp_type", "must"),
    [
        # RFC 6733 section 4.5
        ("Session-Id", 263, 0, AvpType.UTF8_STRING, M),
        ("Origin-Host", 264, 0, AvpType.DIAMETER_IDENTITY, M),
        ("Result-Code", 268, 0, AvpType.UNSIGNED32, M),
        ("Failed-AVP", 279, 0, AvpType.GROUPED, M),
        ("Product-Name", 269, 0, AvpType.UTF8_STRING, 0),
        ("Host-IP-Address", 257, 0, AvpType.ADDRESS, M),
        ("Event-Timestamp", 55, 0, AvpType.TIME, M),
        # RFC 4006 section 8
        ("CC-Request-Type", 416, 0, AvpType.ENUMERATED, M),
        ("CC-Request-Number", 415, 0, AvpType.UNSIGNED32, M),
        ("Multiple-Services-Credit-Control", 456, 0, AvpType.GROUPED, M),
        ("CC-Total-Octets", 421, 0, AvpType.UNSIGNED64, M),
        ("Final-Unit-Indication", 430, 0, AvpType.GROUPED, M),
        ("Validity-Time", 448, 0, AvpType.UNSIGNED32, M),
        ("Service-Context-Id", 461, 0, AvpType.UTF8_STRING, M),
        ("Exponent", 429, 0, AvpType.INTEGER32, M),
        # TS 32.299 section 7.2
        ("Service-Information", 873, 10415, AvpType.GROUPED, M | V),
        ("PS-Information", 874, 10415, AvpType.GROUPED, M | V),
        ("Quota-Holding-Time", 871, 10415, AvpType.UNSIGNED32, M | V),
        ("Reporting-Reason", 872, 10415, AvpType.ENUMERATED, M | V),
        ("Volume-Quota-Threshold", 869, 10415, AvpType.UNSIGNED32, M | V),
        ("Called-Party-Address", 832, 10415, AvpType.UTF8_STRING, M | V),
        ("3GPP-RAT-Type", 21, 10415, AvpType.OCTET_STRING, V),
    ],
)
def test_spec_codes(name: str, code: int, vendor: int, avp_type: AvpType, must: int) -> None:
    definition = D.avp(name)
    assert (definition.code, definition.vendor_id, definition.type, definition.must_flags) == (
        code,
        vendor,
        avp_type,
        must,
    )
    assert D.avps_by_key[(code, vendor)] is definition
    assert definition.section  # every entry says where it was checked


def test_enumerations() -> None:
    assert dict(D.avp("CC-Request-Type").enum_values) == {
        "INITIAL_REQUEST": 1,
        "UPDATE_REQUEST": 2,
        "TERMINATION_REQUEST": 3,
        "EVENT_REQUEST": 4,
    }
    assert D.avp("Final-Unit-Action").enum_values["REDIRECT"] == 1
    assert D.avp("Subscription-Id-Type").enum_name(1) == "END_USER_IMSI"


def test_commands() -> None:
    ccr = D.commands[272]
    assert (ccr.name, ccr.application_id, ccr.proxiable) == ("Credit-Control", 4, True)
    assert ccr.request.rules[0].name == "Session-Id" and ccr.request.rules[0].fixed
    assert not D.commands[257].proxiable and not D.commands[280].proxiable
    assert set(D.commands) == {257, 258, 272, 274, 275, 280, 282}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("< Session-Id >", (1, 1, True)),
        ("{ Origin-Host }", (1, 1, False)),
        ("[ Origin-State-Id ]", (0, 1, False)),
        ("*[ Proxy-Info ]", (0, None, False)),
        ("1*{ Host-IP-Address }", (1, None, False)),
        ("*{ AVP }", (1, None, False)),
        ("2*3[ X ]", (2, 3, False)),
    ],
)
def test_parse_rule(text: str, expected: tuple[int, int | None, bool]) -> None:
    rule = parse_rule(text)
    assert (rule.minimum, rule.maximum, rule.fixed) == expected


@pytest.mark.parametrize("text", ["{ X ]", "Session-Id", "1[ X ]", "<>"])
def test_parse_rule_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(text)


def _toml(body: str) -> list[tuple[str, bytes]]:
    return [("test.toml", body.encode())]


def test_duplicate_code_is_refused() -> None:
    body = """
[[avp]]
name = "A"
code = 1
type = "Unsigned32"
[[avp]]
name = "B"
code = 1
type = "Unsigned32"
"""
    with pytest.raises(ValueError, match="defined twice"):
        load_dictionary(_toml(body))


def test_undefined_grammar_name_is_refused() -> None:
    body = """
[[avp]]
name = "G"
code = 1
type = "Grouped"
grammar = ["{ Missing }"]
"""
    with pytest.raises(ValueError, match="undefined AVP Missing"):
        load_dictionary(_toml(body))


def test_vendor_without_v_flag_is_refused() -> None:
    body = """
[[avp]]
name = "A"
code = 1
vendor = 10415
must = "M"
type = "Unsigned32"
"""
    with pytest.raises(ValueError, match="no V flag"):
        load_dictionary(_toml(body))
