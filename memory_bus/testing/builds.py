"""Holding the builder thread, to test what happens while an index is being built."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from hivemem.memory_bus.index_build import BUILDER, Build


@contextmanager
def builder_held(timeout: float = 60.0) -> Iterator[threading.Event]:
    """Keep the process's builder thread busy until the block ends or the event is set.

    Builds started meanwhile wait in its queue, so a test sees an index mid-build
    for as long as it needs, whatever the machine's speed.

    Args:
        timeout: Seconds after which the builder is let go anyway.
    """
    gate, running = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        gate.wait(timeout)

    BUILDER.start(Build(np.empty(0, np.int64), hold, fresh=True, generation=-1, exact_rows=0))
    if not running.wait(timeout):
        raise TimeoutError("the builder thread did not take the holding build")
    try:
        yield gate
    finally:
        gate.set()
