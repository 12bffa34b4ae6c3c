"""The Lua scripts as package data, registered once by their SHA1.

Theory of operation: each operation is one file in ``balance/lua/`` opening with its header
(KEYS, ARGV, return shape, invariants). ``lib.lua`` holds the money rules they share; it is put in
front of each operation file here, so every registered script is one self-contained chunk that
Redis (and Redis Cluster, node by node) caches under its SHA1. Callers run a ``Script`` with
EVALSHA and load it on NOSCRIPT.
"""

from __future__ import annotations

import hashlib
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


# Every operation is idempotent by its key except ``credit`` (add_bucket has no key), so every
# other script may be sent again when a connection dies with the outcome unknown.
_NOT_RETRY_SAFE = frozenset({Operation.CREDIT})


@dataclass(frozen=True, slots=True)
class Script:
    operation: Operation
    source: str
    sha: str

    @property
    def retry_safe(self) -> bool:
        return self.operation not in _NOT_RETRY_SAFE


def _read(name: str) -> str:
    return (resources.files("balance") / "lua" / name).read_text(encoding="utf-8")


def load_scripts() -> dict[Operation, Script]:
    library = _read("lib.lua")
    scripts: dict[Operation, Script] = {}
    for operation in Operation:
        source = f"{library}\n{_read(f'{operation.value}.lua')}"
        scripts[operation] = Script(operation, source, hashlib.sha1(source.encode("utf-8")).hexdigest())
    return scripts


SCRIPTS: dict[Operation, Script] = load_scripts()
