"""Python's cyclic garbage collector, held off while a bus server answers a request."""

from __future__ import annotations

import gc
import threading


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
