"""A pipe that wakes a thread blocked in a poll, from any thread or a signal handler."""

from __future__ import annotations

import contextlib
import os


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
            os.close(self.fd)
            os.close(self._write)
            self.fd = self._write = -1
