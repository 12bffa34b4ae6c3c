"""The session notifier over TCP: account events reach it through the seam, and the answers to its
RAR and ASR are read (5002 forgets the session; other failures are logged and counted).

The whole OCS runs on port 0 over a private Redis (``server`` fixture); the client is a Diameter
peer over real TCP that answers the server's requests with the Result-Code each test chooses.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from balance.types import AccountStatus
from ocs.events import AccountEvent, BalanceChanged, StatusChanged
from ocs.metrics import Metrics
from protocol.aio import DiameterClient
from protocol.message import Message, answer_to, avp
from tests.ocs.conftest import CLIENT, RunningServer
from tests.ocs.test_api import wait_for
from tests.ocs.test_credit_control import EUR, call_to, ccr, seconds

RE_AUTH = 258  # RFC 6733 section 3.1
ABORT_SESSION = 274


def answering(result_code: int, received: list[Message]) -> Callable[[DiameterClient, Message], None]:
    """A client's request handler: keep the request, answer it with ``result_code`` (RFC 6733
    sections 8.3.2 and 8.5.2: Session-Id, Result-Code, Origin-Host, Origin-Realm)."""

    def on_request(client: DiameterClient, message: Message) -> None:
        received.append(message)
        avps = [avp("Session-Id", message.get("Session-Id")), avp("Result-Code", result_code), *CLIENT.origin_avps()]
        client.send_answer(answer_to(message, avps))

    return on_request


async def final_unit_session(server: RunningServer, client: DiameterClient) -> None:
    """Account "will" with one minute of money, and its call "call-w" in final-unit state."""
    await server.subscriber("will", "4915100000009", micros=90_000)
    initial = await client.request(
        ccr(
            "call-w",
            "INITIAL_REQUEST",
            0,
            seconds("Requested-Service-Unit", 300),
            call_to("4917612345678"),
            msisdn="4915100000009",
        )
    )
    assert initial.find("Final-Unit-Indication") is not None


def answered(metrics: Metrics, command: str, result_code: str) -> float:
    labels = {"command": command, "result_code": result_code}
    return metrics.registry.get_sample_value("ocs_diameter_server_requests_total", labels) or 0.0


async def test_an_event_published_on_the_seam_reaches_the_notifier_and_every_subscriber(
    server: RunningServer,
) -> None:
    client = await server.client()
    received: list[Message] = []
    client.on_request = answering(2001, received)
    await final_unit_session(server, client)
    state = server.state
    assert state.store is not None
    seen: list[AccountEvent] = []

    def subscriber(event: AccountEvent) -> int:
        seen.append(event)
        return 0

    state.events.subscribe(subscriber)
    await state.store.top_up("will", "card-1", 5 * EUR)
    event = BalanceChanged("will", "top_up", 5 * EUR)
    assert state.events.publish(event) == 1  # the notifier sent one RAR, the test's subscriber none
    assert seen == [event]
    await wait_for(lambda: len(received) == 1)
    assert received[0].command_code == RE_AUTH and received[0].get("Session-Id") == "call-w"
    await wait_for(lambda: answered(state.metrics, "RAR", "2001") == 1)
    # Suspending reaches the subscriber and every open session at once: a RAR (issue 13), in
    # final-unit state or not (the top-up's RAR took this one out of it).
    suspended = StatusChanged("will", AccountStatus.ACTIVE, AccountStatus.SUSPENDED)
    assert state.events.publish(suspended) == 1 and seen == [event, suspended]
    await wait_for(lambda: len(received) == 2)
    assert received[1].command_code == RE_AUTH and received[1].get("Session-Id") == "call-w"
    barred = StatusChanged("will", AccountStatus.SUSPENDED, AccountStatus.BARRED)
    assert state.events.publish(barred) == 1
    await wait_for(lambda: len(received) == 3)
    assert received[2].command_code == ABORT_SESSION and received[2].get("Session-Id") == "call-w"
    await client.close()


async def test_a_re_auth_answered_unknown_session_makes_the_notifier_forget_it(server: RunningServer) -> None:
    client = await server.client()
    received: list[Message] = []
    client.on_request = answering(5002, received)  # DIAMETER_UNKNOWN_SESSION_ID, RFC 6733 section 7.1.5
    await final_unit_session(server, client)
    notifier = server.state.notifier
    assert notifier is not None and notifier.open_sessions == 1
    assert notifier.account_topped_up("will") == 1
    await wait_for(lambda: notifier.open_sessions == 0)
    assert answered(server.state.metrics, "RAR", "5002") == 1
    # The client does not have the session: no ASR is sent for it any more.
    assert notifier.account_blocked("will") == 0
    assert [message.command_code for message in received] == [RE_AUTH]
    await client.close()


async def test_an_abort_answered_with_a_failure_is_logged_and_counted(server: RunningServer) -> None:
    client = await server.client()
    received: list[Message] = []
    client.on_request = answering(5012, received)  # DIAMETER_UNABLE_TO_COMPLY
    await final_unit_session(server, client)
    notifier = server.state.notifier
    assert notifier is not None
    with structlog.testing.capture_logs() as logs:
        assert notifier.account_blocked("will") == 1
        await wait_for(lambda: answered(server.state.metrics, "ASR", "5012") == 1)
    failed = [line for line in logs if line["event"] == "notify_failed"]
    assert failed == [
        {
            "event": "notify_failed",
            "log_level": "warning",
            "command": "ASR",
            "result_code": 5012,
            "session_id": "call-w",
        }
    ]
    assert notifier.open_sessions == 1  # only 5002 says the session is gone
    await client.close()
