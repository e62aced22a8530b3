"""The worker's collector settings once started (they carry most of its p99 at 300 requests/s)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from airlock.llm_worker.worker import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_what_exists_and_spaces_out_young_collections() -> None:
    gc.unfreeze()
    alive = [object() for _ in range(100)], {"kept": [1, 2, 3]}
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 10_000  # CPython's default (700) is what made the tail
    assert gc.get_freeze_count() > 0
    # What lived at start-up is no longer walked by any collection (frozen objects are in no generation).
    assert not any(o is alive[1] for o in gc.get_objects())
