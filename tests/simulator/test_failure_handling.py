"""Tx and Credit-Control-Failure-Handling (RFC 4006 sections 5.7 and 8.14): what an element does
when the OCS goes silent, against a real Diameter server (ours, over TCP) that never answers a CCR."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from protocol.aio import DiameterServer, DiameterTransport
from protocol.capabilities import LocalIdentity
from protocol.message import Message
from simulator.elements import ElementTiming, NetworkElement
from simulator.faults import NO_FAULTS, FaultDice
from simulator.population import CustomerType, SimulatedSubscriber
from simulator.records import NO_ANSWER, Recorder, SessionOutcome
from simulator.scenario import VOICE_CONTEXT
from simulator.sessions import CallerContext, MeteredService, run_metered_session, voice_information

LINE = SimulatedSubscriber("quiet", CustomerType.MOBILE_PREPAID, "mobile_prepaid", True, "4915100000009")


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, list[Message]]]:
    received: list[Message] = []

    def swallow(transport: DiameterTransport, message: Message) -> None:
        received.append(message)  # no answer, ever: the client's Tx must expire

    server = DiameterServer(LocalIdentity("silent.test", "test"), swallow)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield port, received
    finally:
        await server.close(1.0)


async def call_once(port: int, failure_handling: str) -> tuple[SessionOutcome, Recorder]:
    recorder = Recorder()
    timing = ElementTiming(
        step_seconds=0.0,
        request_timeout_seconds=0.2,
        retransmissions=2,
        retry_pause_seconds=0.0,
        failure_handling=failure_handling,
    )
    element = await NetworkElement.connect(
        "127.0.0.1",
        port,
        LocalIdentity("ims.sim.test", "sim.test"),
        recorder,
        timing,
        FaultDice(NO_FAULTS, random.Random(1)),
    )
    try:
        caller = CallerContext(
            element, LINE, "voice", VOICE_CONTEXT, "tel:+4930901820", voice_information(LINE.msisdn or "", "4930901820")
        )
        outcome = await run_metered_session(caller, [MeteredService(None, "CC-Time", 60, 60)])
    finally:
        await element.close()
    return outcome, recorder


async def test_retry_and_terminate_retransmits_with_the_t_flag_then_ends_the_session(
    silent_server: tuple[int, list[Message]],
) -> None:
    port, received = silent_server
    outcome, recorder = await call_once(port, "RETRY_AND_TERMINATE")
    assert outcome is SessionOutcome.FAILED
    # CCR-I three times (once, then twice with the T flag), then the CCR-T that ends it, three times.
    assert recorder.requests[("voice CCR-I", NO_ANSWER)] == 3 and recorder.requests[("voice CCR-T", NO_ANSWER)] == 3
    assert recorder.retransmissions == 4
    assert [message.is_retransmission for message in received] == [False, True, True, False, True, True]
    assert len({message.end_to_end for message in received[:3]}) == 1  # the same request each time
    assert recorder.uncertain_sessions  # the simulator cannot know whether the OCS applied it


async def test_terminate_gives_up_at_the_first_silence(silent_server: tuple[int, list[Message]]) -> None:
    port, received = silent_server
    outcome, recorder = await call_once(port, "TERMINATE")
    assert outcome is SessionOutcome.FAILED
    assert recorder.requests[("voice CCR-I", NO_ANSWER)] == 1 and recorder.requests[("voice CCR-T", NO_ANSWER)] == 1
    assert recorder.retransmissions == 0
    assert [message.is_retransmission for message in received] == [False, False]
