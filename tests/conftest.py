from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

# The admin token every test server knows (tests/ocs/conftest.py puts it in the server's
# database); the ocs command line and the simulator read it from OCS_TOKEN, as an operator's would.
ADMIN_TOKEN = "ocs_tests-admin-token-not-a-secret"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(autouse=True)
def api_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCS_TOKEN", ADMIN_TOKEN)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on uvloop, as the server does: pytest-asyncio's hook for choosing the loop
    (overriding the ``event_loop_policy`` fixture is deprecated from pytest-asyncio 1.3 on)."""
    return {"uvloop": uvloop.new_event_loop}
