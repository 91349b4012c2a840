"""The garbage collector around a bus server: paused per request, old objects frozen."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest
from hivemem.memory_bus.collector import (
    COLLECTOR_PAUSE,
    OLD_OBJECT_FREEZER,
    OldObjectFreezer,
)
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore


class Node:
    """Something that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def garbage_cycle() -> weakref.ref[Node]:
    """A two-node cycle nothing else refers to; the ref dies when the collector frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def full_collections_timed(server: BusServer) -> float:
    value = server.metrics.registry.get_sample_value(
        "hivemem_bus_gc_pause_seconds_count", {"generation": "2"}
    )
    return value or 0.0


@pytest.fixture
def quiet_collector() -> Iterator[None]:
    """No other freezer acting, nothing frozen before or after the test, and no
    collection but the test's own (``gc.collect`` still runs while automatic ones are off)."""
    assert OLD_OBJECT_FREEZER._holders == 0, "a bus server of another test is still running"
    gc.unfreeze()
    gc.disable()
    yield
    gc.enable()
    gc.unfreeze()


def test_the_pause_disables_the_collector_and_restores_what_it_found() -> None:
    assert gc.isenabled()
    with COLLECTOR_PAUSE:
        with COLLECTOR_PAUSE:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with COLLECTOR_PAUSE:
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()


def test_survivors_of_a_full_collection_are_frozen_and_cycles_wait_for_a_whole_one(
    quiet_collector: None,
) -> None:
    now = [0.0]
    freezer = OldObjectFreezer(growth=1e9, whole_every_s=60.0, clock=lambda: now[0])
    freezer.hold()
    try:
        gc.collect()  # walks everything, then freezes it
        assert freezer.freezes == 1 and gc.get_freeze_count() > 0
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        gc.collect()  # the cycle survives (it is referenced) and is frozen
        assert freezer.freezes == 2
        del a, b  # now garbage, but frozen: a full collection does not see it
        gc.collect()
        assert alive() is not None and freezer.thaws == 0
        now[0] = 61.0  # time for a whole collection: everything unfrozen after this one
        gc.collect()
        assert freezer.thaws == 1 and gc.get_freeze_count() == 0
        gc.collect()  # walks everything: the cycle is freed, the survivors frozen again
        assert alive() is None and gc.get_freeze_count() > 0
        young = garbage_cycle()  # garbage before any collection saw it: freed as usual
        gc.collect()
        assert young() is None
    finally:
        freezer.release()
    assert gc.get_freeze_count() == 0 and freezer._on_collection not in gc.callbacks


def test_a_whole_collection_comes_once_the_interpreters_memory_has_grown(
    quiet_collector: None,
) -> None:
    freezer = OldObjectFreezer(growth=1.5, whole_every_s=float("inf"))
    freezer.hold()
    try:
        gc.collect()
        blocks = sys.getallocatedblocks()
        gc.collect()
        assert (freezer.freezes, freezer.thaws) == (2, 0)  # grown by little: frozen again
        kept = [[i] for i in range(blocks // 2)]  # a list, its array, an int: 3 blocks each
        assert sys.getallocatedblocks() > 1.5 * blocks
        gc.collect()
        assert freezer.thaws == 1 and gc.get_freeze_count() == 0
        gc.collect()  # walks everything, then freezes it again
        assert freezer.freezes == 3 and gc.get_freeze_count() > len(kept)
    finally:
        freezer.release()


def test_a_server_holds_the_freezer_from_start_to_stop() -> None:
    assert OLD_OBJECT_FREEZER._holders == 0, "a bus server of another test is still running"
    with BusServer(MemoryStore(StoreConfig(dim=8), embed=False)) as server:
        assert OLD_OBJECT_FREEZER._holders == 1
        with BusServer(MemoryStore(StoreConfig(dim=8), embed=False)):
            assert OLD_OBJECT_FREEZER._holders == 2
        timed = full_collections_timed(server)
        gc.collect()
        assert gc.get_freeze_count() > 0
        assert full_collections_timed(server) >= timed + 1  # the metric times collections
        server.stop()  # stopping twice releases once
    assert OLD_OBJECT_FREEZER._holders == 0 and gc.get_freeze_count() == 0
    timed = full_collections_timed(server)
    gc.collect()
    assert full_collections_timed(server) == timed  # no longer timed once stopped
    with BusServer(MemoryStore(StoreConfig(dim=8), embed=False), freeze_old_objects=False):
        assert OLD_OBJECT_FREEZER._holders == 0
        gc.collect()
        assert gc.get_freeze_count() == 0
