from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on uvloop, as the server does: pytest-asyncio's hook for choosing the loop
    (overriding the ``event_loop_policy`` fixture is deprecated from pytest-asyncio 1.3 on)."""
    return {"uvloop": uvloop.new_event_loop}
