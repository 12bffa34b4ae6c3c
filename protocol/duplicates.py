"""Duplicate request detection (RFC 6733 section 5.5.4 and 6.1).

Theory of operation: a request is identified by (Origin-Host, End-to-End Identifier). When we
answer a request we remember the encoded answer under that key in a bounded LRU cache shared by
all connections (a retransmission with the T flag usually arrives on another connection, after
the client failed over). A later request with the same key gets the remembered answer again,
re-stamped with the new Hop-by-Hop Identifier, so the application is not asked twice.
"""

from __future__ import annotations

from collections import OrderedDict

from protocol.constants import DUPLICATE_CACHE_SIZE

DuplicateKey = tuple[str, int]  # (Origin-Host, End-to-End Identifier)
_HOP_BY_HOP_OFFSET = 12  # RFC 6733 section 3: header bytes 12..15


class DuplicateCache:
    __slots__ = ("_answers", "capacity", "hits")

    def __init__(self, capacity: int = DUPLICATE_CACHE_SIZE) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._answers: OrderedDict[DuplicateKey, bytes] = OrderedDict()
        self.capacity = capacity
        self.hits = 0

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, key: DuplicateKey, encoded_answer: bytes) -> None:
        answers = self._answers
        answers[key] = encoded_answer
        answers.move_to_end(key)
        if len(answers) > self.capacity:
            answers.popitem(last=False)

    def replay(self, key: DuplicateKey, hop_by_hop: int) -> bytes | None:
        """The remembered answer for ``key`` with ``hop_by_hop`` stamped in, or None."""
        encoded = self._answers.get(key)
        if encoded is None:
            return None
        self.hits += 1
        return b"".join(
            (
                encoded[:_HOP_BY_HOP_OFFSET],
                hop_by_hop.to_bytes(4, "big"),
                encoded[_HOP_BY_HOP_OFFSET + 4 :],
            )
        )
