"""Check a decoded message against its command grammar (RFC 6733 sections 3.2 and 7.1).

Theory of operation: ``validate`` looks the command up (3001 if unknown), checks the application
(3007 if not one of ours), the header bits against the command definition (3008), and then walks
the AVPs against the request or answer grammar, descending into Grouped AVPs with their own
grammars. Problems come back as ``Failure`` values in the order found; the first one decides
the answer (RFC 6733 section 7.5 allows reporting one). Missing AVPs are reported with an
example AVP of that code carrying a zero-filled minimal value, as section 7.5 asks.

This runs for every request, and nearly every request is valid, so it is done twice over:
``_is_clean`` answers "is anything wrong?" with set operations on each level's AVP keys (packed
into integers, which hash for free) against the tables each ``Grammar`` derives once at dictionary
load (``QuickCheck``: fixed, required, allowed, single-valued keys); only when it finds something
does ``_check`` walk the AVPs to say what and where. Before both, a message whose decoder gave its
shape (``protocol.codec.Decoded.shape``: the keys of every level) is looked up among the shapes
found clean: the requests of a network element repeat a few shapes, and so cost one lookup.
The two must agree: ``_is_clean`` is true exactly when ``_check`` reports nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

from protocol.avp_types import MINIMUM_PAYLOAD_SIZE
from protocol.constants import ApplicationId, ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY, AvpDefinition, AvpKey, Dictionary, Grammar
from protocol.errors import Failure
from protocol.message import Avp, Message

# RFC 6733 section 7.2: the grammar every answer with the E bit follows, whatever its command.
_ERROR_ANSWER_REQUIRED = ("Origin-Host", "Origin-Realm", "Result-Code")


def example_avp(definition: AvpDefinition) -> Avp:
    """An AVP of the definition's code with a zero-filled minimal payload, for Failed-AVP."""
    payload = bytes(MINIMUM_PAYLOAD_SIZE.get(definition.type, 0))
    return Avp(definition.code, definition.must_flags, definition.vendor_id, payload)  # V is in must_flags


# Raw header bits as plain ints: IntFlag arithmetic costs a microsecond per operation.
_REQUEST_BIT = 0x80  # RFC 6733 section 3
_PROXIABLE_BIT = 0x40
_ERROR_BIT = 0x20


def validate(
    message: Message,
    applications: Collection[int],
    dictionary: Dictionary = DEFAULT_DICTIONARY,
    shape: tuple[int, ...] | None = None,
) -> list[Failure]:
    """Grammar problems of ``message``; ``applications`` are the Application-Ids we serve;
    ``shape`` is the message's own ``Decoded.shape``, if known (its AVPs must not have changed)."""
    command = dictionary.commands.get(message.command_code)
    if command is None:
        return [Failure(ResultCode.DIAMETER_COMMAND_UNSUPPORTED, None, f"command {message.command_code}")]
    # A command defined by an application (Credit-Control: 4) is only valid in that application;
    # base commands (application 0 in the dictionary) travel in any application we serve.
    wrong_application = command.application_id != 0 and message.application_id not in (
        command.application_id,
        ApplicationId.RELAY,
    )
    if wrong_application or (
        message.application_id not in applications and message.application_id != ApplicationId.RELAY
    ):
        return [
            Failure(
                ResultCode.DIAMETER_APPLICATION_UNSUPPORTED,
                None,
                f"application {message.application_id} for {command.name}",
            )
        ]
    flags = message.flags
    if flags & _REQUEST_BIT and not command.proxiable and flags & _PROXIABLE_BIT:
        # RFC 6733 section 3: the P bit must match the command's definition; CER, DWR and DPR
        # are never proxied (sections 5.3.1, 5.5.1, 5.4.1).
        return [Failure(ResultCode.DIAMETER_INVALID_HDR_BITS, None, f"P bit on {command.name}")]
    failures: list[Failure] = []
    if not flags & _REQUEST_BIT and flags & _ERROR_BIT:
        for name in _ERROR_ANSWER_REQUIRED:
            definition = dictionary.avp(name)
            if not any(avp.key == definition.key for avp in message.avps):
                failures.append(Failure(ResultCode.DIAMETER_MISSING_AVP, example_avp(definition), f"missing {name}"))
        return failures
    grammar = command.request if flags & _REQUEST_BIT else command.answer
    clean_shapes = _clean_shapes(grammar, dictionary) if shape is not None else None
    if clean_shapes is not None and shape in clean_shapes:
        return failures
    if not _is_clean(message.avps, grammar, dictionary):
        _check(message.avps, grammar, dictionary, failures, command.name)
    elif clean_shapes is not None and shape is not None and len(clean_shapes) < _SHAPES_KEPT:
        clean_shapes.add(shape)
    return failures


# How many clean shapes are remembered per grammar. A network element sends a handful of shapes
# per command; a peer sending ever new ones only finds them checked in full.
_SHAPES_KEPT: Final = 1024
# id(grammar) -> (that grammar, the dictionary, the shapes found clean): the entry holds both
# objects, so a grammar is never confused with a later one at the same address.
_shapes: dict[int, tuple[Grammar, Dictionary, set[tuple[int, ...]]]] = {}


def _clean_shapes(grammar: Grammar, dictionary: Dictionary) -> set[tuple[int, ...]]:
    """The message shapes (``protocol.codec.Decoded.shape``) found clean against ``grammar``.

    Whether a message's AVPs fit the grammar is a function of their keys, in order and nested as
    the shape records them (which values are Grouped members is in it too), so a message shaped
    like a clean one is clean: one tuple lookup instead of a walk of every level."""
    found = _shapes.get(id(grammar))
    if found is None or found[0] is not grammar or found[1] is not dictionary:
        found = _shapes[id(grammar)] = (grammar, dictionary, set())
    return found[2]


def _is_clean(avps: Sequence[Avp], grammar: Grammar, dictionary: Dictionary) -> bool:
    """True when ``_check`` would find nothing wrong in ``avps`` or the Grouped AVPs inside."""
    fixed, required, allowed, single, counted, accepts_empty = grammar.quick
    if not avps:
        return accepts_empty
    keys = [(item.vendor_id << 32) | item.code for item in avps]  # protocol.dictionary.packed_key
    present = set(keys)
    if (
        not required <= present
        or (allowed is not None and not present <= allowed)
        or (fixed and keys[: len(fixed)] != fixed)
        # A repeated key is fine unless single-valued: occurrences of single-valued keys must
        # equal the number of distinct ones.
        or (len(present) != len(keys) and sum(map(single.__contains__, keys)) != len(single & present))
    ):
        return False
    for key, minimum, maximum in counted:
        count = keys.count(key)
        if count < minimum or (maximum is not None and count > maximum):
            return False
    if present.isdisjoint(dictionary.grouped_packed_keys):
        return True
    grouped = dictionary.grouped_by_packed_key
    for item in avps:
        value = item.value
        if isinstance(value, list):
            definition = grouped.get((item.vendor_id << 32) | item.code)
            if definition is not None and not _is_clean(value, definition.grammar, dictionary):  # type: ignore[arg-type]
                return False
    return True


def _check(
    avps: Sequence[Avp],
    grammar: Grammar,
    dictionary: Dictionary,
    failures: list[Failure],
    owner: str,
) -> None:
    # Fixed elements ("< X >") open the list in the order given (RFC 6733 section 3.2).
    for position, rule in enumerate(r for r in grammar.rules if r.fixed):
        if position >= len(avps) or avps[position].key != rule.key:
            definition = dictionary.avps_by_key[rule.key]
            present = next((a for a in avps if a.key == rule.key), None)
            failures.append(
                Failure(
                    ResultCode.DIAMETER_MISSING_AVP if present is None else ResultCode.DIAMETER_AVP_NOT_ALLOWED,
                    example_avp(definition) if present is None else present,
                    f"{owner}: {rule.name} must be AVP number {position + 1}",
                )
            )
    counts: dict[AvpKey, int] = {}
    rules = grammar.by_key
    grouped = dictionary.grouped_by_key
    for item in avps:
        key = item.key
        seen = counts.get(key, 0) + 1
        counts[key] = seen
        matched = rules.get(key)
        if matched is None:
            if not grammar.allows_other_avps:
                failures.append(Failure(ResultCode.DIAMETER_AVP_NOT_ALLOWED, item, f"{owner}: AVP {key} not allowed"))
        elif matched.maximum is not None and seen > matched.maximum:
            failures.append(
                Failure(
                    ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
                    item,
                    f"{owner}: {matched.name} more than {matched.maximum}",
                )
            )
        group = grouped.get(key)
        if group is not None and group.grammar is not None and isinstance(item.value, list):
            _check(item.value, group.grammar, dictionary, failures, group.name)
    for rule in grammar.rules:
        if counts.get(rule.key, 0) < rule.minimum:
            failures.append(
                Failure(
                    ResultCode.DIAMETER_MISSING_AVP,
                    example_avp(dictionary.avps_by_key[rule.key]),
                    f"{owner}: missing {rule.name}",
                )
            )
