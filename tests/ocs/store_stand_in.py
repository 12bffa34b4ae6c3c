"""A test's stand-in for the money engine's store: the real store behind every attribute the
stand-in does not override. The store is compiled in the default install, and an interpreted
class cannot subclass a compiled one, so a test that makes one call fail wraps the store instead."""

from __future__ import annotations

from typing import Any

from balance.store import BalanceStore


class StoreStandIn:
    def __init__(self, store: BalanceStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)
