"""The enumerations retyped in Python agree with the dictionary (protocol/dictionary/*.toml).

The dictionary is where an Enumerated AVP's values are written and checked against their RFC;
code that names those values again (an IntEnum, a table of names, a single constant) must say the
same: same names, same values. Each row below pairs one such piece of code with its AVP; a name
that the code spells differently from the RFC (``INITIAL`` for ``INITIAL_REQUEST``, upper case
for ``IPv4_Address``) is mapped in the row, so the spelling is the only thing allowed to differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import IntEnum

import pytest

from ocs import app
from ocs.charging import cca, ccr, notifier, queries
from ocs.rating import book, load
from protocol.capabilities import InbandSecurity
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.disconnect import DisconnectCause


def _members(enumeration: type[IntEnum]) -> dict[str, int]:
    return {member.name: int(member.value) for member in enumeration}


def _same(name: str) -> str:
    return name


def _request_type(name: str) -> str:
    return name.removesuffix("_REQUEST")


# (AVP, the values as the code has them by name, the code's spelling of a dictionary name)
WHOLE_ENUMERATIONS: list[tuple[str, Mapping[str, int], Callable[[str], str]]] = [
    ("CC-Request-Type", _members(ccr.RequestType), _request_type),
    ("CC-Request-Type", {name: value for value, name in enumerate(app._REQUEST_TYPES) if name}, _request_type),
    ("Requested-Action", _members(ccr.RequestedAction), _same),
    ("Final-Unit-Action", _members(cca.FinalUnitAction), _same),
    ("Final-Unit-Action", {name: value for value, name in enumerate(book.FINAL_UNIT_ACTIONS)}, _same),
    ("Redirect-Address-Type", _members(book.RedirectAddressType), str.upper),
    (
        "Redirect-Address-Type",
        {name.replace(" ", "_"): int(value) for name, value in load._REDIRECT_ADDRESS_TYPES.items()},
        _same,
    ),
    (
        "Subscription-Id-Type",
        {kind.name: value for value, kind in ccr._IDENTITY_KINDS.items()},
        lambda name: name.removeprefix("END_USER_"),
    ),
    ("Inband-Security-Id", _members(InbandSecurity), _same),
    ("Disconnect-Cause", _members(DisconnectCause), _same),
]

# Single values named by a constant: (AVP, dictionary name, the constant's value).
SINGLE_VALUES: list[tuple[str, str, int]] = [
    ("Redirect-Address-Type", "URL", cca.REDIRECT_ADDRESS_TYPE_URL),
    ("Re-Auth-Request-Type", "AUTHORIZE_ONLY", notifier.RE_AUTH_AUTHORIZE_ONLY),
    ("Check-Balance-Result", "ENOUGH_CREDIT", queries.CHECK_BALANCE_ENOUGH_CREDIT),
    ("Check-Balance-Result", "NO_CREDIT", queries.CHECK_BALANCE_NO_CREDIT),
    ("Reporting-Reason", "FINAL", ccr.REPORTING_REASON_FINAL),
]


@pytest.mark.parametrize(("avp_name", "in_code", "spelled"), WHOLE_ENUMERATIONS)
def test_an_enumeration_in_code_has_the_dictionary_names_and_values(
    avp_name: str, in_code: Mapping[str, int], spelled: Callable[[str], str]
) -> None:
    in_dictionary = DEFAULT_DICTIONARY.avp(avp_name).enum_values
    assert in_dictionary, f"{avp_name} has no enumeration in the dictionary"
    assert dict(in_code) == {spelled(name): value for name, value in in_dictionary.items()}


@pytest.mark.parametrize(("avp_name", "name", "value"), SINGLE_VALUES)
def test_a_constant_has_the_dictionary_value(avp_name: str, name: str, value: int) -> None:
    assert DEFAULT_DICTIONARY.avp(avp_name).enum_values[name] == value
