"""The requests being answered: each one's coroutine run without an asyncio task of its own.

Theory of operation: a CCR's answer is a coroutine (``ocs.app``: read, rate, charge, answer) that
suspends on one future at a time, almost always the pipelined Redis client's reply to the charge.
An ``asyncio.Task`` per request cost the server some 12k instructions to make, one loop pass
(``call_soon`` of its first step) before the request's work even began, and a step per resume.
``InFlight.start`` instead sends the coroutine its first step at once, on the Diameter reader's
own call (``data_received``: no task runs there; called from a task, at the next loop pass, so
that the request never runs as part of another task), up to its first suspension; the future it
yields gets a done callback that sends the next step, in the request's own
``contextvars.Context`` (copied at the start, as a task copies its context: the log lines of a
request name it, ``ocs.logs.bind_request``), so the answer is sent from the continuation of the
reply that completes the charge. This is what a task's step does, without the task object, its
scheduling and its cancellation machinery.

What it gives up: there is no current task while a request runs, so ``asyncio.timeout`` (and
``asyncio.current_task``) cannot be used on its path; deadlines there are timers on futures
(``balance.deadline.within``, the pipelined client's silence check). Nothing cancels a request:
the server never did (shutdown waits for the requests in flight, bounded by its timeout), and a
request ends by itself, its Redis calls failing in time (balance/store.py "Deadlines").

Accounting: ``len()`` is the number of requests started and not finished (the in-flight bound
of ``ocs.app`` and the gauge of ``ocs.metrics``); ``wait`` waits until none is left, or a
timeout, for graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from functools import partial
from typing import Any

import structlog

log = structlog.get_logger("ocs.in_flight")

Request = Coroutine[Any, Any, None]


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        self._drained: asyncio.Future[None] | None = None  # made by ``wait`` only

    def __len__(self) -> int:
        return self._count

    def start(self, request: Request) -> None:
        """Run ``request`` until its first suspension now, and on from each future it waits on."""
        self._count += 1
        context = contextvars.copy_context()
        if asyncio.current_task() is None:  # the server's case: called from the Diameter reader
            context.run(self._step, request, context)
        else:  # inside a task's step the request would run as part of that task: start it apart
            asyncio.get_running_loop().call_soon(self._resume, request, context, None, context=context)

    def _resume(self, request: Request, context: contextvars.Context, _: object) -> None:
        self._step(request, context)  # scheduled with ``context=context``: already inside it

    def _step(self, request: Request, context: contextvars.Context) -> None:
        try:
            waited = request.send(None)
        except StopIteration:
            self._finished()
            return
        except BaseException:  # the coroutine's own handler failed: nothing may kill the caller
            log.exception("request_failed")
            self._finished()
            return
        resume = partial(self._resume, request, context)
        if waited is None:  # a bare yield (``asyncio.sleep(0)``): go on at the next loop pass
            asyncio.get_running_loop().call_soon(resume, None, context=context)
        elif asyncio.isfuture(waited) and waited._asyncio_future_blocking:
            waited._asyncio_future_blocking = False
            waited.add_done_callback(resume, context=context)
        else:
            request.close()
            log.error("request_yielded_a_non_future", value=repr(waited))
            self._finished()

    def _finished(self) -> None:
        self._count -= 1
        if self._count == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait until no request is in flight, at most ``timeout`` seconds; True if none is left."""
        if self._count == 0:
            return True
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), timeout)
        except TimeoutError:
            return False
        return True
