"""Python's cyclic garbage collector around a bus server: held off while a request is
answered, and kept from walking the whole store again and again.

Two things a server holding millions of objects needs from the collector:

- **No collection in the middle of a request** (:class:`CollectorPause`).
- **Full collections that do not grow with the store** (:class:`OldObjectFreezer`). A
  full collection walks every tracked object of the process, and one comes each time the
  objects that outlived a collection grow by a quarter: with a million items stored in a
  growing bus that was a pause of a quarter of a second on the owner thread (every
  client waits), each one longer than the last. The freezer moves what survived a full
  collection out of the collector's sight (:func:`gc.freeze`), so the next full
  collection walks only what came since. Frozen objects are still freed by reference
  counting, as nearly everything a store drops is (an evicted item, a replaced version);
  only garbage *cycles* among them wait, until the freezer lets one full collection walk
  everything again: once the interpreter's memory blocks (:func:`sys.getallocatedblocks`,
  which grow with the objects it holds) have grown ``growth`` times since the last such
  collection, or ``whole_every_s`` seconds have passed. (Counting the frozen objects
  themselves, :func:`gc.get_freeze_count`, walks them all: 36 ms at 3 million.)
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


class CollectorPause:
    """Holds Python's cyclic garbage collector off while a server answers a request.

    A batched request makes tens of thousands of short-lived objects (the decoded
    entries, requests, hits, reply maps) that reference counting frees as soon as the
    reply is packed. If a collection runs in the middle, it promotes them all to the
    oldest generation, and full collections, which walk every object of the store (and
    of the rest of the process), then come every few requests: at 10,000 agents that
    cost a third of the bus's time. Collections resume after each request, so garbage
    cycles are still collected. Re-entrant across the owner threads of several servers in
    one process; the collector is re-enabled only if it was enabled when the first
    pause began.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


COLLECTOR_PAUSE = CollectorPause()
"""The one pause every server of a process shares (the collector is process-wide)."""


class OldObjectFreezer:
    """Freezes what outlives each full collection, so the next one walks only newer objects.

    Process-wide while held (the collector is): servers :meth:`hold` it while they run and
    :meth:`release` it when they stop; the last release unfreezes everything, and the
    process's collector is as it was. See the module docstring for what it trades.

    Args:
        growth: A full collection walks everything again once the interpreter's memory
            blocks have grown this many times since the last one that did.
        whole_every_s: ... or once this many seconds have passed since it.
        clock: Seconds, monotonic.
    """

    def __init__(
        self,
        growth: float = 4.0,
        whole_every_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.growth, self.whole_every_s, self._clock = growth, whole_every_s, clock
        self._lock = threading.Lock()
        self._holders = 0
        self._whole_next = True  # the next full collection walks every object
        self._whole_size = 0  # the interpreter's memory blocks after the last whole one
        self._whole_at = 0.0
        self.freezes = 0  # full collections followed by a freeze (for tests and curiosity)
        self.thaws = 0  # times everything was unfrozen for a whole collection

    def hold(self) -> None:
        """Start freezing after full collections (if this is the first holder)."""
        with self._lock:
            self._holders += 1
            if self._holders == 1:
                self._whole_next = True
                gc.callbacks.append(self._on_collection)

    def release(self) -> None:
        """Stop (if this was the last holder): unfreeze everything."""
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0:
                gc.callbacks.remove(self._on_collection)
                gc.unfreeze()

    @contextlib.contextmanager
    def holding(self, hold: bool = True) -> Iterator[None]:
        """:meth:`hold` (if ``hold``) for the ``with`` block, :meth:`release` after it."""
        if not hold:
            yield
            return
        self.hold()
        try:
            yield
        finally:
            self.release()

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        """After a full collection: freeze its survivors, or unfreeze for a whole one.

        Runs in the thread that triggered the collection, inside the collector's call;
        moving generations about (:func:`gc.freeze`, :func:`gc.unfreeze`) is all it does.
        """
        if phase != "stop" or info["generation"] != 2:
            return
        now = self._clock()
        if self._whole_next:  # this one walked everything
            self._whole_next = False
            self._whole_at = now
            gc.freeze()
            self._whole_size = sys.getallocatedblocks()
        elif (
            sys.getallocatedblocks() > self.growth * max(self._whole_size, 1)
            or now - self._whole_at >= self.whole_every_s
        ):
            gc.unfreeze()  # into the oldest generation: the next full collection walks it
            self._whole_next = True
            self.thaws += 1
            return
        else:
            gc.freeze()
        self.freezes += 1


OLD_OBJECT_FREEZER = OldObjectFreezer()
"""The one freezer every server of a process shares."""
