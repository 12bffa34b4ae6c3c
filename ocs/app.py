"""The OCS process: ``serve()`` -> ``startup()`` -> run until a signal -> ``shutdown()``.

Theory of operation: for now (issue 2) the server speaks Diameter fully at the base-protocol
level (capabilities exchange, watchdog, disconnect, validation with Failed-AVP, duplicate
detection) and answers every valid Credit-Control request with DIAMETER_UNABLE_TO_COMPLY (5012),
because rating and the balance engine (issues 3 and 4) do not exist yet. Nothing is charged.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field

import structlog

from protocol.aio import DiameterServer, DiameterTransport
from protocol.capabilities import LocalIdentity
from protocol.constants import ResultCode
from protocol.events import Event, PeerClosed, PeerOpened, RequestRejected
from protocol.message import Message, answer_to, avp

log = structlog.get_logger("ocs")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 3868  # RFC 6733 section 11.4: the IANA port for Diameter over TCP
    origin_host: str = "ocs.localdomain"
    origin_realm: str = "localdomain"
    shutdown_timeout_seconds: float = 5.0


@dataclass(slots=True)
class ServerState:
    diameter: DiameterServer | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def answer_credit_control(transport: DiameterTransport, request: Message) -> None:
    """Placeholder until issue 4: a well-formed 5012 answer, nothing charged."""
    identity = transport.peer.identity
    avps = [
        avp("Session-Id", request.get("Session-Id") or ""),
        avp("Result-Code", int(ResultCode.DIAMETER_UNABLE_TO_COMPLY)),
        *identity.origin_avps(),
        avp("Error-Message", "credit control is not implemented yet"),
    ]
    for name in ("Auth-Application-Id", "CC-Request-Type", "CC-Request-Number"):
        found = request.find(name)
        if found is not None:
            avps.append(found)
    transport.send_answer(answer_to(request, avps))


def log_event(transport: DiameterTransport, event: Event) -> None:
    if isinstance(event, PeerOpened):
        log.info("peer_open", peer=event.capabilities.origin_host, address=str(transport.peername))
    elif isinstance(event, PeerClosed):
        log.info("peer_closed", reason=event.reason, address=str(transport.peername))
    elif isinstance(event, RequestRejected):
        log.info("request_rejected", result_code=int(event.failure.result_code), reason=event.failure.reason)


async def startup(settings: ServerSettings, state: ServerState) -> tuple[str, int]:
    identity = LocalIdentity(settings.origin_host, settings.origin_realm, origin_state_id=int(time.time()))
    state.diameter = DiameterServer(identity, answer_credit_control, on_event=log_event)
    address = await state.diameter.start(settings.host, settings.port)
    log.info("listening", host=address[0], port=address[1])
    return address


async def shutdown(settings: ServerSettings, state: ServerState) -> None:
    if state.diameter is not None:
        await state.diameter.close(settings.shutdown_timeout_seconds)
    log.info("stopped")


async def serve(settings: ServerSettings) -> None:
    state = ServerState()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, state.stop.set)
    await startup(settings, state)
    try:
        await state.stop.wait()
    finally:
        await shutdown(settings, state)
