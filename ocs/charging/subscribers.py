"""Subscriber lookup with an in-memory cache (DESIGN.md: "lookup keys that the server caches").

Theory of operation: a CCR names its subscriber by one or more Subscription-Ids; the first one the
directory knows decides. Hits are kept for ``ttl_seconds`` and misses for a shorter time (so a
subscriber provisioned a moment ago is found soon, and a flood of unknown ids does not reach
Redis on every request). The cache is bounded; the oldest entries go first. Provisioning through
this process forgets the entries it changes at once; other processes see changes after the TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from balance.directory import Directory, Identity, Subscriber

DEFAULT_TTL_SECONDS = 60.0
DEFAULT_NEGATIVE_TTL_SECONDS = 2.0
DEFAULT_CAPACITY = 200_000  # ~ a few hundred bytes each: tens of MB at most


class SubscriberCache:
    def __init__(
        self,
        directory: Directory,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        negative_ttl_seconds: float = DEFAULT_NEGATIVE_TTL_SECONDS,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        self.negative_ttl_seconds = negative_ttl_seconds
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[Identity, tuple[float, Subscriber | None]] = OrderedDict()

    async def find(self, identities: Sequence[Identity]) -> Subscriber | None:
        if len(identities) == 1:
            # The usual CCR: one Subscription-Id. A fresh entry answers without a coroutine of
            # its own (this runs for every CCR; a miss costs a directory lookup anyway).
            cached = self._entries.get(identities[0])
            if cached is not None and cached[0] > self.clock():
                return cached[1]
        for identity in identities:
            found = await self._one(identity)
            if found is not None:
                return found
        return None

    async def _one(self, identity: Identity) -> Subscriber | None:
        now = self.clock()
        cached = self._entries.get(identity)
        if cached is not None and cached[0] > now:
            return cached[1]
        subscriber = await self.directory.lookup(identity)
        lifetime = self.ttl_seconds if subscriber is not None else self.negative_ttl_seconds
        self._entries[identity] = (now + lifetime, subscriber)
        self._entries.move_to_end(identity)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return subscriber

    def forget(self, identities: Sequence[Identity]) -> None:
        for identity in identities:
            self._entries.pop(identity, None)
