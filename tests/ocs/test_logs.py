"""Log lines name the request being answered: each request task's binding, and only its own."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import pytest
import structlog

from ocs.charging.credit_control import CreditControl
from ocs.logs import bind_request, configure_logging
from protocol.message import Message, avp, request
from tests.ocs.conftest import RunningServer
from tests.ocs.test_credit_control import ccr as full_ccr
from tests.ocs.test_credit_control import code


def ccr(session_id: str, number: int, peer: str) -> Message:
    return request(
        272,
        4,
        [
            avp("Session-Id", session_id),
            avp("Origin-Host", peer),
            avp("Origin-Realm", "test"),
            avp("CC-Request-Type", "UPDATE_REQUEST"),
            avp("CC-Request-Number", number),
        ],
    )


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(stream=stream)
    yield stream
    structlog.reset_defaults()


def logged(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_each_request_task_logs_its_own_request(lines: io.StringIO) -> None:
    log = structlog.get_logger("test")
    both_bound = asyncio.Event()
    bound = 0

    async def answer(message: Message) -> None:
        nonlocal bound
        bind_request(message)
        bound += 1
        if bound == 2:
            both_bound.set()
        await both_bound.wait()  # both tasks have bound before either logs
        log.info("answered", result_code=2001)

    await asyncio.gather(
        asyncio.ensure_future(answer(ccr("pgw;1;a", 3, "pgw1.test"))),
        asyncio.ensure_future(answer(ccr("smsc;1;b", 0, "smsc.test"))),
    )
    log.info("outside")
    by_session = {line.get("session_id"): line for line in logged(lines)}
    assert by_session["pgw;1;a"]["request_number"] == 3
    assert by_session["pgw;1;a"]["peer"] == "pgw1.test"
    assert by_session["smsc;1;b"]["request_number"] == 0
    assert by_session["smsc;1;b"]["peer"] == "smsc.test"
    outside = by_session[None]
    assert outside["event"] == "outside" and "request_number" not in outside and "peer" not in outside


def test_fields_given_to_the_line_win_over_the_bound_request(lines: io.StringIO) -> None:
    async def answer() -> None:
        bind_request(ccr("pgw;1;c", 5, "pgw1.test"))
        structlog.get_logger("test").info("relayed", peer="other.test")

    asyncio.run(answer())
    (line,) = logged(lines)
    assert line["peer"] == "other.test"
    assert line["session_id"] == "pgw;1;c" and line["request_number"] == 5


async def test_the_server_names_the_request_in_its_lines(
    server: RunningServer, lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TCP: a request whose handling fails gets 5012 at once, and the error line names it."""

    async def broken(self: CreditControl, message: Message) -> Message:
        raise RuntimeError("a bug in the handler")

    monkeypatch.setattr(CreditControl, "respond", broken)  # what the server calls
    client = await server.client()
    try:
        answer = await client.request(full_ccr("pgw;logs;1", "INITIAL_REQUEST", 0))
    finally:
        await client.close()
    assert code(answer) == 5012  # DIAMETER_UNABLE_TO_COMPLY
    (failed,) = [line for line in logged(lines) if line["event"] == "credit_control_failed"]
    assert failed["session_id"] == "pgw;logs;1"
    assert failed["request_number"] == 0
    assert failed["peer"] == "pgw.test"
    assert "a bug in the handler" in str(failed["exception"])
