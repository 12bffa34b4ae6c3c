"""The simulator's end-to-end tests run against the whole OCS of tests/ocs (``server``)."""

from __future__ import annotations

from tests.ocs.conftest import embedded_redis, server

__all__ = ["embedded_redis", "server"]
