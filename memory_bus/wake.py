"""How the owner thread waits: a pipe that wakes it from a poll, and when it busy-polls."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable


class Wake:
    """The read end goes into the sleeping thread's poller; :meth:`wake` writes to the
    other. ``os.write`` is safe in a signal handler, and unlike a socket the pipe needs
    no ZeroMQ context. Closed, it wakes nobody (and :meth:`wake` does nothing).
    """

    def __init__(self, pipe: bool = True) -> None:
        """Args: pipe: False makes one that is closed already (a server not started)."""
        self.fd, self._write = os.pipe() if pipe else (-1, -1)
        if pipe:
            os.set_blocking(self._write, False)

    def wake(self) -> None:
        """Make :attr:`fd` readable (a full pipe has a wake-up waiting already)."""
        if self._write >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self._write, b"!")

    def clear(self) -> None:
        """Read the wake-ups that are waiting (call once the poll has returned)."""
        os.read(self.fd, 4096)

    def close(self) -> None:
        """Close both ends; idempotent."""
        if self._write >= 0:
            # Forgotten before they are closed: a signal handler that calls wake() in
            # between finds nothing to write to, rather than an fd closed (EBADF) or
            # already reused by a file another thread opened.
            fd, write = self.fd, self._write
            self.fd = self._write = -1
            os.close(fd)
            os.close(write)


SPIN_CHUNK = 16 << 10
"""Bytes of idle work (pages faulted in ahead) between two polls while spinning."""
IDLE_CHUNK = 64 << 10
"""Bytes of idle work between two polls otherwise (16 pages: 30-160 us here)."""


class BusyPoll:
    """When the owner thread polls without sleeping (``BusServer(spin_us=...)``), and the
    work it does between polls instead of sleeping (``idle``).

    After answering, a thread that goes back to sleep in its poll pays a wake-up on the
    next request (here, on a virtual machine, ~100 us of a single write's round trip);
    one that keeps polling finds the request at once, and its caches warm. Spinning costs
    the CPU it spins, so it is adaptive, as Linux's hybrid polling is: the thread spins
    after an answer only if the request it answered arrived within ``spin_s`` of the
    answer before. Clients that pause longer than that find it asleep, and a bus idle
    between requests never spins; at most one spin is wasted as a burst ends.

    Work that waits for the thread's idle time (the pages its writes will need, see
    :func:`~hivemem.memory_bus.pages.prefault_while_idle`) goes before each poll, a chunk
    at a time, and the poll then does not sleep; a small chunk while spinning, so that a
    request that arrives waits little.

    Args:
        spin_s: Seconds to spin after an answer (0: never).
        clock: A monotonic clock in seconds.
        idle: Does up to the given bytes of idle work; False if there was none.
    """

    def __init__(
        self,
        spin_s: float,
        clock: Callable[[], float] = time.perf_counter,
        idle: Callable[[int], bool] = lambda chunk: False,
    ) -> None:
        self.spin_s, self._clock, self._idle = spin_s, clock, idle
        self._answered = -math.inf  # when the last answer went out
        self._until = -math.inf  # spin until then
        self._dense = False  # whether the last request came within spin_s of the answer before

    def timeout_ms(self, sleep_ms: int) -> int:
        """The next poll's timeout, after a chunk of idle work if there is any: 0 while
        spinning or while idle work remains, else ``sleep_ms``."""
        spinning = self._clock() < self._until
        if self._idle(SPIN_CHUNK if spinning else IDLE_CHUNK):
            return 0
        return 0 if spinning else sleep_ms

    def arrived(self) -> None:
        """A request is waiting (call as the poll returns with one)."""
        self._dense = self._clock() - self._answered <= self.spin_s

    def answered(self) -> None:
        """Every waiting request is answered: spin from now on if requests come densely."""
        now = self._answered = self._clock()
        self._until = now + self.spin_s if self._dense and self.spin_s > 0 else -math.inf
