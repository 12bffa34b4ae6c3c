"""A deadline on an awaitable that needs no current task.

Theory of operation: ``asyncio.timeout`` cancels the *current task* when it expires, so it cannot
be used where no task runs: the server answers a CCR from the continuation of the future it
waits on (ocs/in_flight.py), not from a task of its own. ``within`` runs the awaited call as a
task of its own and arms a timer (``loop.call_later``) that cancels that task at the deadline,
which the caller then sees as ``TimeoutError``, as with ``asyncio.timeout``; a reply in time
cancels the timer. It is for the calls that are rare on the request path (the settling look of a
failed charge, redis-py's calls of queries and refunds): the charge itself is bounded by the
pipelined client's silence check (balance/pipeline.py) and costs no task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def within(seconds: float | None, call: Coroutine[Any, Any, T]) -> T:
    """``call``'s result, or ``TimeoutError`` once ``seconds`` have passed (None: no deadline)."""
    if seconds is None:
        return await call
    loop = asyncio.get_running_loop()
    task = loop.create_task(call)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_later(seconds, expire)
    try:
        return await task
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
