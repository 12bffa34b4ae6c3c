"""Requests answered without a task of their own (ocs/in_flight.py), and the calls on their path
that used to need one: the settling look of a failed charge, redis-py's calls."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

from balance.deadline import within
from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import ChargeRequest, Outcome
from ocs.in_flight import InFlight
from tests.balance.test_deadlines import (  # noqa: F401 (fixtures)
    NOW,
    account_with_one_euro,
    fails_while_redis_sleeps,
    redis_server,
    snapshot,
    store,
    voice,
)

Result = TypeVar("Result")
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="")


def without_task(in_flight: InFlight, call: Coroutine[Any, Any, Result]) -> asyncio.Future[Result]:
    """Run ``call`` as the server runs a CCR's answer; its outcome in the future returned."""
    outcome: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    async def request() -> None:
        try:
            outcome.set_result(await call)
        except BaseException as error:  # handed over whole, as the test expects it
            outcome.set_exception(error)

    in_flight.start(request())
    return outcome


async def test_a_request_runs_at_once_without_a_task_and_goes_on_from_its_future() -> None:
    in_flight = InFlight()
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[object] = []

    async def answer() -> None:
        seen.append(asyncio.current_task())
        seen.append(await reply)
        seen.append(asyncio.current_task())

    loop = asyncio.get_running_loop()
    started = loop.create_future()
    loop.call_soon(lambda: (in_flight.start(answer()), started.set_result(list(seen))))  # as data_received
    assert await started == [None] and len(in_flight) == 1  # ran up to its first wait before start returned
    reply.set_result("charged")
    await asyncio.sleep(0)  # the future's callbacks run at the next pass
    assert seen == [None, "charged", None] and len(in_flight) == 0


async def test_each_request_logs_under_its_own_context() -> None:
    in_flight = InFlight()
    replies = [asyncio.get_running_loop().create_future() for _ in range(2)]
    seen: list[str] = []

    async def answer(name: str, reply: asyncio.Future[None]) -> None:
        REQUEST.set(name)
        await reply
        seen.append(REQUEST.get())

    in_flight.start(answer("first", replies[0]))
    in_flight.start(answer("second", replies[1]))
    replies[1].set_result(None)
    replies[0].set_result(None)
    await asyncio.sleep(0)
    assert sorted(seen) == ["first", "second"] and REQUEST.get() == ""


async def test_shutdown_waits_for_the_requests_in_flight_and_gives_up_at_its_timeout() -> None:
    in_flight = InFlight()
    assert await in_flight.wait(0.01)
    reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer() -> None:
        await reply
        await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) makes

    in_flight.start(answer())
    assert not await in_flight.wait(0.01)  # still waiting for its reply
    waiting = asyncio.ensure_future(in_flight.wait(60))
    reply.set_result(None)
    assert await waiting and len(in_flight) == 0


async def test_a_request_that_fails_is_counted_out() -> None:
    in_flight = InFlight()

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("a bug")

    in_flight.start(broken())
    assert await in_flight.wait(60) and len(in_flight) == 0


async def test_within_bounds_a_call_where_no_task_runs() -> None:
    in_flight = InFlight()
    late = without_task(in_flight, within(0.01, asyncio.sleep(60, "late")))
    in_time = without_task(in_flight, within(60, asyncio.sleep(0, "in time")))
    assert await in_time == "in time"
    await asyncio.wait([late], timeout=60)
    assert isinstance(late.exception(), TimeoutError)


async def test_a_charge_without_a_task_is_settled_before_it_fails(
    store: BalanceStore,  # noqa: F811
    redis_server: EmbeddedRedis,  # noqa: F811
) -> None:
    """balance/store.py "Deadlines" where no task runs (pipelined and redis-py callers): the
    settling look and redis-py's calls work, the charge fails as ``BalanceUnavailable`` and
    changes nothing, as it does in a task (tests/balance/test_deadlines.py)."""
    in_flight = InFlight()
    before = await account_with_one_euro(store, redis_server, "dora")
    update = ChargeRequest("dora", "call", 0, (voice(requested=60),), NOW)
    await fails_while_redis_sleeps(redis_server, without_task(in_flight, store.charge(update)))
    assert snapshot(redis_server) == before
    again = await without_task(in_flight, store.charge(update))
    assert again.outcome is Outcome.OK and len(in_flight) == 0
