"""Faults on demand: what the network does wrong, and how often (``[faults]`` of a scenario).

Theory of operation: a ``Faults`` value holds the rates; a ``FaultDice`` rolls them with a
seeded generator, one per network element, so a run's faults follow from the seed (the moment
each strikes still depends on timing). The elements ask the dice at the points where a real
network would go wrong:

- ``retransmit``: an answer "got lost": the request is sent again with the T flag (RFC 6733
  section 3, RFC 4006 section 5.7) after its answer came, and the second answer must say the
  same (the OCS applied it once);
- ``duplicate``: the request is sent twice at once, the copy with the T flag;
- ``late_update``: a CCR-UPDATE arrives again, late and out of order, as a new request after
  the next one was answered: the OCS must refuse it (a stale CC-Request-Number) and change nothing;
- ``abandon``: a session stops without CCR-TERMINATION (a crashed element), leaving its
  reservations to the OCS's Tcc supervision (RFC 4006 section 13);
- ``connection_drop_mean_seconds``: each element's TCP connection is cut (abort, no DPR) at
  exponential intervals; the element reconnects and retransmits what was unanswered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Faults:
    retransmit_share: float = 0.0  # of answered requests
    duplicate_share: float = 0.0  # of requests
    late_update_share: float = 0.0  # of CCR-UPDATEs
    abandon_share: float = 0.0  # of metered sessions
    connection_drop_mean_seconds: float = 0.0  # per element; 0: never

    def __post_init__(self) -> None:
        shares = (self.retransmit_share, self.duplicate_share, self.late_update_share, self.abandon_share)
        if not all(0.0 <= share <= 1.0 for share in shares):
            raise ValueError("fault shares are between 0 and 1")
        if self.connection_drop_mean_seconds < 0:
            raise ValueError("connection_drop_mean_seconds is >= 0")

    @property
    def any(self) -> bool:
        return self != Faults()


NO_FAULTS = Faults()


class FaultDice:
    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.faults = faults
        self.rng = rng

    def _roll(self, share: float) -> bool:
        return share > 0.0 and self.rng.random() < share

    def retransmit(self) -> bool:
        return self._roll(self.faults.retransmit_share)

    def duplicate(self) -> bool:
        return self._roll(self.faults.duplicate_share)

    def late_update(self) -> bool:
        return self._roll(self.faults.late_update_share)

    def abandon(self) -> bool:
        return self._roll(self.faults.abandon_share)

    def next_connection_drop_seconds(self) -> float | None:
        mean = self.faults.connection_drop_mean_seconds
        return self.rng.expovariate(1.0 / mean) if mean > 0 else None
