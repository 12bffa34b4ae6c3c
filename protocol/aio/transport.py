"""``asyncio.Protocol`` that drives one ``PeerConnection``.

Theory of operation: bytes from the socket go to the peer, whose events go to the owner's
callback. Outgoing bytes are not written one message at a time: the first send in a loop pass
schedules one ``flush`` with ``call_soon``, which writes everything queued in that pass in a
single ``transport.write`` (fewer syscalls when many answers complete together). One timer handle
is kept, re-armed at the peer's ``next_deadline`` after every batch of work.

A peer that stops reading: once the kernel's buffers are full, what we write piles up in the
transport. Over ``WRITE_BUFFER_HIGH_BYTES`` asyncio calls ``pause_writing`` and we stop reading
from that peer (no new requests, so no new answers: what is queued stays bounded by the high
mark plus the answers of requests already in flight); under ``WRITE_BUFFER_LOW_BYTES``
(``resume_writing``) we read again. A paused peer sends nothing, so its watchdog sends a DWR and,
with no answer for 2 x Tw, gives up: the transport is then aborted, since a graceful close would
wait for a drain that never comes. Any other close (after a DPA, a refused CER, a protocol
violation) flushes first, but is aborted if it has not finished within
``CLOSE_DRAIN_TIMEOUT_SECONDS``. Either way ``connection_lost`` runs and ``closed`` resolves.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from protocol.disconnect import DisconnectCause
from protocol.encoded import EncodedAnswer
from protocol.events import Event, PeerClosed
from protocol.message import Message
from protocol.peer import PeerConnection

EventCallback = Callable[["DiameterTransport", list[Event]], None]

# Flow control marks of the transport's own write buffer. A Gy CCA is 200 bytes to 2 KiB, so the
# high mark holds a few hundred answers: enough to ride out a slow reader, little per connection.
WRITE_BUFFER_HIGH_BYTES = 256 * 1024
WRITE_BUFFER_LOW_BYTES = 64 * 1024
# ours: how long a graceful close may take to deliver its last bytes (a CEA refusal, a DPA, the
# answers before a DPR) before the connection is aborted; DPA_TIMEOUT_SECONDS is of the same order.
CLOSE_DRAIN_TIMEOUT_SECONDS = 5.0


class DiameterTransport(asyncio.Protocol):
    def __init__(self, peer: PeerConnection, on_events: EventCallback) -> None:
        self.peer = peer
        self._on_events = on_events
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = self._loop.create_future()
        self.peername: object = None
        self.reading_paused = False  # we stopped reading: the peer is not reading our answers
        self._drain_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES, low=WRITE_BUFFER_LOW_BYTES)  # type: ignore[attr-defined]
        self.peername = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Answers are small and latency-bound; Nagle would hold them back (RFC 3539 section 2.3).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._after(self.peer.connection_made(self._loop.time()))

    def data_received(self, data: bytes) -> None:
        self._after(self.peer.receive_data(data, self._loop.time()))

    def connection_lost(self, exc: Exception | None) -> None:
        events = self.peer.connection_lost(self._loop.time())
        for handle in (self._timer, self._drain_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._drain_timer = None
        self._transport = None
        if events:
            self._on_events(self, events)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        """Over the high mark: read no more requests from a peer that does not read answers."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
            self.reading_paused = True

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self.reading_paused = False

    @property
    def queued_bytes(self) -> int:
        """What was written to the transport and not yet taken by the kernel."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    # --- owner API ------------------------------------------------------------------------------
    def send_answer(self, answer: Message | EncodedAnswer) -> None:
        self.peer.send_answer(answer)
        self._schedule_flush()

    def send_request(self, message: Message, context: object = None) -> Message:
        stamped = self.peer.send_request(message, context)
        self._schedule_flush()
        return stamped

    def disconnect(self, cause: DisconnectCause = DisconnectCause.REBOOTING) -> None:
        self._after(self.peer.disconnect(self._loop.time(), cause))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- internals ------------------------------------------------------------------------------
    def _after(self, events: list[Event]) -> None:
        if events:
            self._on_events(self, events)
        self._schedule_flush()
        self._arm_timer()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return
        data = self.peer.data_to_send()
        if self.peer.abort_requested:
            transport.abort()  # nothing queued will be read: drop it, and the connection, now
            return
        if data:
            transport.write(data)
        if self.peer.close_requested and not transport.is_closing():
            transport.close()  # flushes what was written first, unless the drain never ends:
            self._drain_timer = self._loop.call_later(CLOSE_DRAIN_TIMEOUT_SECONDS, self._abort_undrained)

    def _abort_undrained(self) -> None:
        self._drain_timer = None
        if self._transport is not None:
            self._transport.abort()

    def _arm_timer(self) -> None:
        deadline = self.peer.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._transport is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._after(self.peer.handle_timer(self._loop.time()))


def closed_reason(events: list[Event]) -> str | None:
    for event in events:
        if isinstance(event, PeerClosed):
            return event.reason
    return None
