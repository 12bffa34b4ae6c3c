"""The bill run's pause of automatic garbage collection (ocs/billing/collection_pause.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ocs.billing.collection_pause import collect_young, paused_collection


@pytest.fixture
def collection_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_overlapping_pauses_turn_collection_back_on_when_the_last_ends(collection_on: None) -> None:
    first = paused_collection()
    second = paused_collection()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)  # the first job ends while the second still works
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_leaves_collection_off_when_it_was_off_already(collection_on: None) -> None:
    gc.disable()
    with paused_collection():
        collect_young()
    assert not gc.isenabled()
    gc.enable()


def test_a_job_that_fails_still_ends_its_pause(collection_on: None) -> None:
    with pytest.raises(RuntimeError), paused_collection():
        raise RuntimeError("the job failed")
    assert gc.isenabled()
