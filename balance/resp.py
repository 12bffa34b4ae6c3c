"""Redis commands packed as RESP for the pipelined client (balance/pipeline.py).

Theory of operation: a command is an array of bulk strings, ``*<count>\\r\\n`` then
``$<length>\\r\\n<bytes>\\r\\n`` per part (the Redis serialization protocol, "Sending commands to
a Redis server"). hiredis's ``pack_command`` formats every count and length with ``sprintf``:
about 600 instructions a part, some 16k for a charge call of 25 parts (bench/README.md). Here
the headers of the usual counts and lengths are bytes made once at import (``_ARRAY_HEADERS``,
``_BULK_HEADERS``), so packing a part is a table lookup and two appends; a part longer than
the table (a script's source) has its header formatted. The leading parts that never change for
a caller (``FCALL`` and the function's name, ``EVALSHA`` and the script's SHA) are packed once
with ``prepare`` and the call adds only its own; the count in front is the whole command's.

Parts are ``bytes``, ``str`` (sent as UTF-8, as hiredis does) or ``int`` (sent as its decimal
text); the packed bytes are the same as hiredis's for these (tests/balance/test_resp.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeAlias

CommandPart: TypeAlias = bytes | str | int

# Headers made once: every count of parts a hot-path command has, and every length of a part
# but a script's or library's source (session ids and keys are tens of bytes). Each part's header
# carries the line end of what comes before it ("\r\n$5\r\n"), the array's header none ("*3"),
# and the command ends with one "\r\n": two pieces a part to join instead of three.
_TABLE_SIZE: Final = 1024
_ARRAY_HEADERS: Final = [b"*%d" % count for count in range(_TABLE_SIZE)]
_BULK_HEADERS: Final = [b"\r\n$%d\r\n" % length for length in range(_TABLE_SIZE)]
_END: Final = b"\r\n"
# The number of keys of a script call, packed as a part ("\r\n$1\r\n4").
_KEY_COUNTS: Final = [b"\r\n$%d\r\n%d" % (len(str(count)), count) for count in range(_TABLE_SIZE)]


class Prepared:
    """The packed leading parts of a command (``prepare``): how many, and their bytes."""

    __slots__ = ("count", "packed")

    def __init__(self, count: int, packed: bytes) -> None:
        self.count = count
        self.packed = packed


def _encoded(part: CommandPart) -> bytes:
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, bytes):
        return part
    if isinstance(part, int):
        return str(part).encode()
    raise TypeError(f"a Redis command part must be bytes, str or int, not {type(part).__name__}")


def _append_parts(out: list[bytes], parts: Sequence[CommandPart]) -> None:
    bulk_headers = _BULK_HEADERS
    for part in parts:
        data = _encoded(part)
        length = len(data)
        out.append(bulk_headers[length] if length < _TABLE_SIZE else b"\r\n$%d\r\n" % length)
        out.append(data)


def _array_header(count: int) -> bytes:
    return _ARRAY_HEADERS[count] if count < _TABLE_SIZE else b"*%d" % count


def prepare(*parts: CommandPart) -> Prepared:
    """The leading parts of a command, packed once (no array header: ``pack_call`` adds it)."""
    out: list[bytes] = []
    _append_parts(out, parts)
    return Prepared(len(parts), b"".join(out))


def pack(parts: Sequence[CommandPart]) -> bytes:
    """One whole command."""
    out = [_array_header(len(parts))]
    _append_parts(out, parts)
    out.append(_END)
    return b"".join(out)


def pack_call(prepared: Prepared, keys: Sequence[CommandPart], args: Sequence[CommandPart]) -> bytes:
    """``FCALL name`` or ``EVALSHA sha`` (``prepared``), the number of keys, the keys, the arguments."""
    key_count = len(keys)
    out = [_array_header(prepared.count + 1 + key_count + len(args)), prepared.packed]
    if key_count < _TABLE_SIZE:
        out.append(_KEY_COUNTS[key_count])
    else:
        _append_parts(out, (key_count,))
    _append_parts(out, keys)
    _append_parts(out, args)
    out.append(_END)
    return b"".join(out)
