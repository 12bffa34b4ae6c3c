"""An answer already in its wire form, for a peer to send as it is.

Theory of operation: an application that lays out its common answers from prepared bytes
(``ocs.charging.answer_template``) hands the peer an ``EncodedAnswer`` instead of a ``Message``:
the bytes to send, the Hop-by-Hop Identifier the peer matches to its pending request (RFC 6733
section 6.2), whether it is a protocol error (E bit: not kept for duplicate detection, section
7.1.3), and its command-level Result-Code for whoever counts answers. The peer sends the bytes
unchanged; it never reads them back.
"""

from __future__ import annotations


class EncodedAnswer:
    """The encoded bytes of one answer and what the sender needs to know of them."""

    __slots__ = ("data", "hop_by_hop", "is_error", "result_code")

    def __init__(self, data: bytes, hop_by_hop: int, result_code: int, *, is_error: bool = False) -> None:
        self.data = data
        self.hop_by_hop = hop_by_hop
        self.result_code = result_code
        self.is_error = is_error

    def __repr__(self) -> str:
        return (
            f"EncodedAnswer(hop_by_hop={self.hop_by_hop!r}, result_code={self.result_code!r}, "
            f"is_error={self.is_error!r}, {len(self.data)} bytes)"
        )
