"""``asyncio.Protocol`` that drives one ``PeerConnection``.

Theory of operation: bytes from the socket go to the peer, whose events go to the owner's
callback. Outgoing bytes are not written one message at a time: the first send in a loop pass
schedules one ``flush`` with ``call_soon``, which writes everything queued in that pass in a
single ``transport.write`` (fewer syscalls when many answers complete together). When the
kernel buffer fills (``pause_writing``) we stop reading, so a peer that does not read its answers
cannot make us queue unbounded work; reading resumes with ``resume_writing``. One timer handle
is kept, re-armed at the peer's ``next_deadline`` after every batch of work.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from protocol.disconnect import DisconnectCause
from protocol.events import Event, PeerClosed
from protocol.message import Message
from protocol.peer import PeerConnection

EventCallback = Callable[["DiameterTransport", list[Event]], None]


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

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        if events:
            self._on_events(self, events)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # --- owner API ------------------------------------------------------------------------------
    def send_answer(self, answer: Message) -> None:
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
        if data:
            transport.write(data)
        if self.peer.close_requested and not transport.is_closing():
            transport.close()  # flushes what was written first

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
