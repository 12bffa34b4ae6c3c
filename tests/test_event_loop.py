"""The test loop is the server's (uvloop), chosen through pytest-asyncio's documented hook; the
deprecated ``event_loop_policy`` override is an error (pyproject's filterwarnings)."""

from __future__ import annotations

import asyncio

import uvloop


async def test_async_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
