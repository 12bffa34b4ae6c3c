"""Requests in flight on one connection, both directions (RFC 6733 section 6.2 and 3).

Theory of operation: ``OutgoingRequests`` maps the Hop-by-Hop Identifier we stamped on a request
to the owner's context, so an answer finds its request (an answer with an unknown Hop-by-Hop
Identifier is discarded, RFC 6733 section 6.2). ``IncomingRequests`` remembers, for each request
we have not answered yet, the key and identity the duplicate cache needs, and counts them for the in-flight
limit. Identifiers: Hop-by-Hop counts up from a random start; End-to-End puts the low 12 bits of
the start time in the high bits and a random number in the low 20 (RFC 6733 section 3).
"""

from __future__ import annotations

import random

from protocol.duplicates import DuplicateKey, RequestIdentity


class IdentifierSource:
    __slots__ = ("_end_to_end", "_hop_by_hop")

    def __init__(self, now: float, rng: random.Random) -> None:
        self._hop_by_hop = rng.getrandbits(32)
        self._end_to_end = ((int(now) & 0xFFF) << 20) | rng.getrandbits(20)

    def next_hop_by_hop(self) -> int:
        self._hop_by_hop = (self._hop_by_hop + 1) & 0xFFFFFFFF
        return self._hop_by_hop

    def next_end_to_end(self) -> int:
        self._end_to_end = (self._end_to_end + 1) & 0xFFFFFFFF
        return self._end_to_end


class OutgoingRequests:
    __slots__ = ("_contexts",)

    def __init__(self) -> None:
        self._contexts: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._contexts)

    def add(self, hop_by_hop: int, context: object) -> None:
        self._contexts[hop_by_hop] = context

    def pop(self, hop_by_hop: int) -> tuple[bool, object]:
        """(found, context) for an answer's Hop-by-Hop Identifier."""
        if hop_by_hop in self._contexts:
            return True, self._contexts.pop(hop_by_hop)
        return False, None

    def drain(self) -> tuple[object, ...]:
        contexts = tuple(self._contexts.values())
        self._contexts.clear()
        return contexts


class IncomingRequests:
    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[int, tuple[DuplicateKey, RequestIdentity]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, hop_by_hop: int, key: DuplicateKey, identity: RequestIdentity) -> None:
        self._keys[hop_by_hop] = (key, identity)

    def pop(self, hop_by_hop: int) -> tuple[DuplicateKey, RequestIdentity] | None:
        return self._keys.pop(hop_by_hop, None)
