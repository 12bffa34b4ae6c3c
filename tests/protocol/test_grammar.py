"""Grammar validation against the command definitions (RFC 6733 sections 3.2, 7.1, 7.5)."""

from __future__ import annotations

import copy
import random

from protocol.codec import decode, encode
from protocol.constants import ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.errors import Failure
from protocol.grammar import _check, _clean_shapes, _is_clean, validate
from protocol.message import Avp, Message, answer_to, avp, request

APPLICATIONS = {0, 4}


def ccr(*extra: Avp, drop: str = "") -> Message:
    avps = [
        avp("Session-Id", "pgw;1"),
        avp("Origin-Host", "pgw.test"),
        avp("Origin-Realm", "test"),
        avp("Destination-Realm", "ocs.test"),
        avp("Auth-Application-Id", 4),
        avp("Service-Context-Id", "32251@3gpp.org"),
        avp("CC-Request-Type", "INITIAL_REQUEST"),
        avp("CC-Request-Number", 0),
        *extra,
    ]
    if drop:
        avps = [a for a in avps if a.key != avp(drop, 0 if drop.startswith("CC-") else "x").key]
    return request(272, 4, avps, hop_by_hop=1, end_to_end=2)


def codes(message: Message) -> list[tuple[ResultCode, int | None]]:
    # Through the wire and back, as the server sees it.
    decoded = decode(encode(message))
    assert decoded.failures == []
    return [
        (f.result_code, f.failed_avp.code if f.failed_avp else None) for f in validate(decoded.message, APPLICATIONS)
    ]


def test_valid_ccr_has_no_failures() -> None:
    mscc = avp("Multiple-Services-Credit-Control", [avp("Requested-Service-Unit", []), avp("Rating-Group", 10)])
    assert codes(ccr(mscc, avp("Multiple-Services-Indicator", 1))) == []


def test_missing_required_avp_is_5005_with_an_example_avp() -> None:
    message = ccr(drop="CC-Request-Number")
    failures = validate(decode(encode(message)).message, APPLICATIONS)
    assert [(f.result_code, f.failed_avp) for f in failures] == [
        (ResultCode.DIAMETER_MISSING_AVP, Avp(415, 0x40, 0, b"\0\0\0\0"))
    ]


def test_session_id_not_first_is_reported() -> None:
    message = ccr()
    message.avps.insert(0, message.avps.pop(2))
    assert codes(message) == [(ResultCode.DIAMETER_AVP_NOT_ALLOWED, 263)]


def test_single_valued_avp_twice_is_5009() -> None:
    assert codes(ccr(avp("CC-Request-Number", 1))) == [(ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, 415)]


def test_missing_avp_inside_grouped_is_5005() -> None:
    assert codes(ccr(avp("Subscription-Id", [avp("Subscription-Id-Type", 0)]))) == [
        (ResultCode.DIAMETER_MISSING_AVP, 444)
    ]


def test_avp_not_allowed_in_closed_grouped_grammar_is_5008() -> None:
    # Subscription-Id has no *[ AVP ] (RFC 4006 section 8.46)
    grouped = avp(
        "Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "49"), avp("Rating-Group", 1)]
    )
    assert codes(ccr(grouped)) == [(ResultCode.DIAMETER_AVP_NOT_ALLOWED, 432)]


def test_unknown_command_is_3001() -> None:
    message = request(9999, 4, [avp("Origin-Host", "a")])
    assert [f.result_code for f in validate(message, APPLICATIONS)] == [ResultCode.DIAMETER_COMMAND_UNSUPPORTED]


def test_unsupported_application_is_3007() -> None:
    message = ccr()
    message.application_id = 16777238  # Gx: not ours
    assert [f.result_code for f in validate(message, APPLICATIONS)] == [ResultCode.DIAMETER_APPLICATION_UNSUPPORTED]


def test_ccr_outside_the_credit_control_application_is_3007() -> None:
    message = ccr()
    message.application_id = 0  # served (base), but a CCR belongs to application 4 only
    assert [f.result_code for f in validate(message, APPLICATIONS)] == [ResultCode.DIAMETER_APPLICATION_UNSUPPORTED]


def test_p_bit_on_cer_is_3008() -> None:
    message = request(257, 0, [avp("Origin-Host", "a")])
    message.flags |= 0x40
    assert [f.result_code for f in validate(message, APPLICATIONS)] == [ResultCode.DIAMETER_INVALID_HDR_BITS]


def test_error_answers_follow_the_generic_answer_grammar() -> None:
    answer = Message(
        272, 0x20, 4, 1, 2, [avp("Origin-Host", "ocs"), avp("Origin-Realm", "r"), avp("Result-Code", 3004)]
    )
    assert validate(answer, APPLICATIONS) == []
    answer.avps.pop()
    assert [f.result_code for f in validate(answer, APPLICATIONS)] == [ResultCode.DIAMETER_MISSING_AVP]


def _mutated(message: Message, rng: random.Random) -> Message:
    """``message`` with one to three AVPs removed, repeated, moved or added at any depth."""
    mutated = copy.deepcopy(message)
    definitions = list(DEFAULT_DICTIONARY.avps_by_key.values())
    for _ in range(rng.randint(1, 3)):
        levels = [mutated.avps]
        for level in levels:
            levels += [item.value for item in level if isinstance(item.value, list)]
        level = rng.choice(levels)
        operation = rng.randrange(4)
        if operation == 0 and level:
            level.pop(rng.randrange(len(level)))
        elif operation == 1 and level:
            level.insert(rng.randrange(len(level) + 1), copy.deepcopy(rng.choice(level)))
        elif operation == 2 and level:
            level.insert(rng.randrange(len(level) + 1), level.pop(rng.randrange(len(level))))
        else:
            definition = rng.choice(definitions)
            payload: list[Avp] | bytes = [] if definition.grammar is not None else b"\0\0\0\0"
            level.insert(rng.randrange(len(level) + 1), Avp(definition.code, 0x40, definition.vendor_id, payload))
    return mutated


def test_quick_check_agrees_with_the_full_walk() -> None:
    """validate() walks the AVPs only when the set-based check finds something: the two must
    agree on every message, valid or not (fixed position, required, repeated, not allowed)."""
    usage = avp("Used-Service-Unit", [avp("CC-Total-Octets", 10), avp("Reporting-Reason", 2)])
    mscc = avp("Multiple-Services-Credit-Control", [avp("Requested-Service-Unit", []), usage, avp("Rating-Group", 1)])
    subscription = avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "49")])
    service = avp("Service-Information", [avp("PS-Information", [avp("Called-Station-Id", "internet")])])
    request_message = ccr(subscription, copy.deepcopy(subscription), mscc, copy.deepcopy(mscc), service)
    grant = avp("Granted-Service-Unit", [avp("CC-Total-Octets", 100)])
    answer_avps = [
        avp("Session-Id", "pgw;1"),
        avp("Result-Code", 2001),
        avp("Origin-Host", "o"),
        avp("Origin-Realm", "r"),
    ]
    answer_avps += [avp("Auth-Application-Id", 4), avp("CC-Request-Type", 1), avp("CC-Request-Number", 0)]
    answer_avps += [avp("Multiple-Services-Credit-Control", [grant, avp("Rating-Group", 1), avp("Result-Code", 2001)])]
    answer_message = answer_to(request_message, answer_avps)
    rng = random.Random(6733)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        message = _mutated(rng.choice([request_message, answer_message]), rng)
        command = DEFAULT_DICTIONARY.commands[272]
        grammar = command.request if message.is_request else command.answer
        walked: list[Failure] = []
        _check(message.avps, grammar, DEFAULT_DICTIONARY, walked, command.name)
        clean = _is_clean(message.avps, grammar, DEFAULT_DICTIONARY)
        assert clean == (walked == []), (clean, walked)
        assert validate(message, APPLICATIONS) == walked
        verdicts[clean] += 1
    assert min(verdicts.values()) > 500  # both outcomes well represented


def test_a_message_shaped_like_a_clean_one_is_answered_from_the_shapes_and_alike() -> None:
    """validate() with the decoder's shape: a shape found clean is remembered and answers the
    next message of that shape at once; any other shape (a missing, repeated or misplaced AVP,
    members moved between levels) takes the full check, and the verdicts are those without it."""
    subscription = avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "49")])
    mscc = avp("Multiple-Services-Credit-Control", [avp("Requested-Service-Unit", []), avp("Rating-Group", 1)])
    base = ccr(subscription, mscc)
    grammar = DEFAULT_DICTIONARY.commands[272].request
    rng = random.Random(4006)
    remembered = 0
    refused = 0
    for _ in range(2000):
        decoded = decode(encode(_mutated(base, rng)))
        if decoded.failures:
            continue  # the peer answers those with the decoder's failure, validating nothing
        assert decoded.shape is not None
        message = decoded.message
        remembered += decoded.shape in _clean_shapes(grammar, DEFAULT_DICTIONARY)
        found = validate(message, APPLICATIONS, shape=decoded.shape)
        assert found == validate(message, APPLICATIONS)
        refused += found != []
    assert remembered > 200 and refused > 500  # both outcomes well represented
