"""Avp, Message and Decoded: plain slotted classes (what mypyc compiles best) that must keep
behaving as the ``@dataclass(slots=True)`` classes they replaced, compiled or not."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest

from protocol.codec import Decoded, decode, encode
from protocol.constants import ResultCode
from protocol.errors import Failure
from protocol.message import Avp, Message, avp


def _member(message: Message) -> Avp:
    """The Subscription-Id-Type inside the message's Subscription-Id."""
    group = message.avps[1].value
    assert isinstance(group, list)
    return group[0]


def _message() -> Message:
    return Message(
        272, 0x80, 4, 7, 9, [avp("Session-Id", "s;1"), avp("Subscription-Id", [avp("Subscription-Id-Type", 0)])]
    )


def test_avp_equality_is_field_by_field() -> None:
    assert Avp(263, 0x40, 0, "s;1") == Avp(263, 0x40, 0, "s;1")
    assert Avp(code=263, flags=0x40, vendor_id=0, value="s;1") == Avp(263, 0x40, 0, "s;1")
    for different in (
        Avp(264, 0x40, 0, "s;1"),
        Avp(263, 0x00, 0, "s;1"),
        Avp(263, 0x40, 1, "s;1"),
        Avp(263, 0x40, 0, "x"),
    ):
        assert Avp(263, 0x40, 0, "s;1") != different


def test_message_equality_is_field_by_field() -> None:
    assert _message() == _message()
    changed = _message()
    _member(changed).value = 1
    assert changed != _message()
    for field, value in (
        ("command_code", 271),
        ("flags", 0),
        ("application_id", 0),
        ("hop_by_hop", 8),
        ("end_to_end", 1),
    ):
        other = _message()
        setattr(other, field, value)
        assert other != _message(), field


def test_equality_with_another_type_is_left_to_it() -> None:
    # A dataclass answers NotImplemented, so Python tries the other side, then falls back to identity.
    assert Avp(1, 0, 0, b"").__eq__((1, 0, 0, b"")) is NotImplemented
    assert Message(1, 0, 0, 0, 0).__eq__(None) is NotImplemented
    assert Avp(1, 0, 0, b"") != (1, 0, 0, b"")
    assert _message() != "message"


def test_an_item_identical_to_itself_compares_equal_as_in_a_dataclass() -> None:
    not_a_number = float("nan")
    assert Avp(1, 0, 0, not_a_number) == Avp(1, 0, 0, not_a_number)
    assert Avp(1, 0, 0, float("nan")) != Avp(1, 0, 0, float("nan"))


def test_mutable_and_compared_by_value_so_unhashable() -> None:
    for item in (Avp(1, 0, 0, b""), _message(), decode(encode(_message()))):
        with pytest.raises(TypeError):
            hash(item)


def test_repr_names_the_fields() -> None:
    assert repr(Avp(263, 64, 0, "s;1")) == "Avp(code=263, flags=64, vendor_id=0, value='s;1')"
    assert repr(Message(257, 128, 0, 1, 2)) == (
        "Message(command_code=257, flags=128, application_id=0, hop_by_hop=1, end_to_end=2, avps=[])"
    )
    failure = Failure(ResultCode.DIAMETER_MISSING_AVP, None, "missing Origin-Host")
    assert repr(Decoded(Message(257, 128, 0, 1, 2), [failure])) == (
        "Decoded(message=Message(command_code=257, flags=128, application_id=0, hop_by_hop=1, end_to_end=2, "
        f"avps=[]), failures=[{failure!r}])"
    )


def test_message_keyword_arguments_and_a_fresh_default_list() -> None:
    first = Message(command_code=280, flags=0x80, application_id=0, hop_by_hop=1, end_to_end=2)
    second = Message(280, 0x80, 0, 1, 2)
    first.append(avp("Origin-Host", "a.example"))
    assert second.avps == []
    assert first.avps == [avp("Origin-Host", "a.example")]
    given = [avp("Origin-Realm", "example")]
    assert Message(280, 0x80, 0, 1, 2, avps=given).avps is given


def test_attributes_are_fixed() -> None:
    with pytest.raises(AttributeError):
        Avp(1, 0, 0, b"").name = "x"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _message().session = "x"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda item: pickle.loads(pickle.dumps(item))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_are_equal(clone: Callable[[object], object]) -> None:
    message = _message()
    decoded = decode(encode(message))
    for item in (message.avps[1], message, decoded):
        copied = clone(item)
        assert copied == item
        assert copied is not item
        assert type(copied) is type(item)


def test_deepcopy_copies_the_members() -> None:
    message = _message()
    copied = copy.deepcopy(message)
    _member(copied).value = 1
    assert _member(message).value == 0
    assert copied != message
