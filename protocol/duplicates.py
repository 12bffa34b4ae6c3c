"""Duplicate request detection (RFC 6733 section 5.5.4 and 6.1).

Theory of operation: a request is looked up by (Origin-Host, End-to-End Identifier), the pair
RFC 6733 section 6.1.1 ("duplicate detection") names. When we answer a request we remember the
encoded answer under that key in a bounded LRU cache shared by all connections (a
retransmission with the T flag usually arrives on another connection, after the client failed
over). A later request with the same key gets the remembered answer again, re-stamped with the
new Hop-by-Hop Identifier, so the application is not asked twice.

The key alone is not proof of a duplicate: a client that restarts, or wraps its End-to-End
counter, sends a new request under an id it used before, and replaying the old answer to it
would leave that request unprocessed (never charged). So the answer is kept with the request's
``RequestIdentity``: its command, application, Session-Id and CC-Request-Number, the fields that
make it the same request. They are what a retransmission keeps (section 5.5.4: only the T flag
and the Hop-by-Hop Identifier change), while agents on another path may add Route-Record or
Proxy-Info (sections 6.1.9, 6.7.3), so the whole body is not compared. A request under a
remembered key with another identity is a new request: it is processed, and its answer replaces
the old one.
"""

from __future__ import annotations

from collections import OrderedDict

from protocol.constants import DUPLICATE_CACHE_SIZE
from protocol.message import Message

DuplicateKey = tuple[str, int]  # (Origin-Host, End-to-End Identifier)
# (Command-Code, Application-Id, Session-Id, CC-Request-Number): None for an AVP not present.
RequestIdentity = tuple[int, int, object, object]


def request_identity(message: Message) -> RequestIdentity:
    """What makes a request the same request as another under one duplicate key."""
    return (
        message.command_code,
        message.application_id,
        message.get("Session-Id"),
        message.get("CC-Request-Number"),
    )


_HOP_BY_HOP_OFFSET = 12  # RFC 6733 section 3: header bytes 12..15


class DuplicateCache:
    __slots__ = ("_answers", "capacity", "hits")

    def __init__(self, capacity: int = DUPLICATE_CACHE_SIZE) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._answers: OrderedDict[DuplicateKey, tuple[RequestIdentity, bytes]] = OrderedDict()
        self.capacity = capacity
        self.hits = 0

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, key: DuplicateKey, identity: RequestIdentity, encoded_answer: bytes) -> None:
        answers = self._answers
        answers[key] = (identity, encoded_answer)
        answers.move_to_end(key)
        if len(answers) > self.capacity:
            answers.popitem(last=False)

    def replay(self, key: DuplicateKey, identity: RequestIdentity, hop_by_hop: int) -> bytes | None:
        """The answer remembered for the same request (``key`` and ``identity``) with
        ``hop_by_hop`` stamped in, or None."""
        found = self._answers.get(key)
        if found is None or found[0] != identity:
            return None
        encoded = found[1]
        self.hits += 1
        return b"".join(
            (
                encoded[:_HOP_BY_HOP_OFFSET],
                hop_by_hop.to_bytes(4, "big"),
                encoded[_HOP_BY_HOP_OFFSET + 4 :],
            )
        )
