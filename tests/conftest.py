from __future__ import annotations

import asyncio

import pytest
import uvloop


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """Run async tests on uvloop, as the server does."""
    return uvloop.EventLoopPolicy()
