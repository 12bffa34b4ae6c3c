"""A master whose replicas lag refuses writes (``min-replicas-to-write``, README "Cluster
failover"): NOREPLICAS, before anything is applied. The caller must see Redis as unavailable
(3004 at the server: the client fails over and retries), not a broken script (5012)."""

from __future__ import annotations

from pathlib import Path

import pytest

from balance.callers import PipelinedCaller
from balance.embedded import EmbeddedRedis
from balance.errors import BalanceUnavailable
from balance.pipeline import PipelinedRedis


async def test_a_master_without_its_replicas_is_unavailable_not_a_script_error(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, extra_arguments=["--min-replicas-to-write", "1"]) as server:
        assert server.port is not None
        async with PipelinedRedis(port=server.port) as client:
            caller = PipelinedCaller(client)
            assert await caller.execute("GET", "ocs:key") is None  # reads still served
            with pytest.raises(BalanceUnavailable, match="NOREPLICAS"):
                await caller.execute("SET", "ocs:key", "1")
            assert await caller.execute("GET", "ocs:key") is None  # nothing applied
