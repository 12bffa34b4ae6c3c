"""Automatic garbage collection paused while a batch job works through its pages, the young
generation collected every few pages instead.

Theory of operation: CPython collects its oldest generation (every tracked object of the process,
the server's caches included) when the objects promoted into it since the last such collection
exceed a quarter of those already there. A bill run's page (a thousand accounts' rows, drafts and
invoice lines) lives long enough for its objects to be promoted, so every page or so triggered a
full collection: 28 of them, 2.9 s, in a bill run of 20,000 accounts, over 40 % of its CPU
(bench/bill_run.py). Nearly all of those objects are freed by their reference counts once the page
is written; the collector only finds cycles, and a page makes few.

So ``paused_collection`` turns automatic collection off for the job, and the job calls
``collect_young`` after each page: every ``PAGES_PER_YOUNG_COLLECTION`` calls it collects
generation 0 (all that was allocated since and is still alive, since nothing is promoted while
collection is off): the cycles the pages made are freed, the page in flight is walked once, not
at every 700 allocations. What survives waits for the first full collection after the job.

The loyalty engine's hook (ocs/loyalty/engine.py) uses it the same way around each spool batch it
evaluates, a batch being its page.

The collector is the process's: the pause is counted, so jobs that overlap in one process (two
runs at once, a run and the scheduler's) share it, and the last one out turns collection back on,
and only if it was on when the first came in (a caller that had turned it off keeps it off).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PAGES_PER_YOUNG_COLLECTION = 10  # a young collection walks the live page: ~10 ms for 1,000 accounts


@dataclass(slots=True)
class _Pause:
    """The process's pause: how many jobs hold it, and whether collection was on before them."""

    holders: int = 0
    was_enabled: bool = False
    pages: int = 0


_PAUSE = _Pause()  # one collector per process, so one pause


@contextmanager
def paused_collection() -> Iterator[None]:
    """Automatic garbage collection off while the block runs (the module docstring)."""
    if _PAUSE.holders == 0:
        _PAUSE.was_enabled = gc.isenabled()
        gc.disable()
    _PAUSE.holders += 1
    try:
        yield
    finally:
        _PAUSE.holders -= 1
        if _PAUSE.holders == 0 and _PAUSE.was_enabled:
            gc.enable()


def collect_young() -> None:
    """A page done: every ``PAGES_PER_YOUNG_COLLECTION`` pages, the young generation collected."""
    _PAUSE.pages += 1
    if _PAUSE.pages % PAGES_PER_YOUNG_COLLECTION == 0:
        gc.collect(0)
