"""Fault in the pages of a growing matrix on a background thread, ahead of its writer.

The first write to a page of fresh memory costs a page fault, and on a virtual machine
whose host backs guest memory lazily it costs far more (measured here: 0.3-0.4 GB/s
for fresh memory against 7-9 GB/s for memory touched before). A vector index that
grows writes every new vector into fresh pages, on the bus's owner thread. This module
asks the kernel to populate the pages just ahead of the write cursor from a daemon
thread instead (``madvise(MADV_POPULATE_WRITE)``, Linux 5.14+). Populating never
changes a page's contents, so it is safe while the owner writes the same rows: the
kernel serialises the two, and whichever comes second finds the page present.

Where the call is not available (another OS, an older kernel), :func:`prefault` does
nothing and the writer faults the pages itself, as it always did.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import queue
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MADV_POPULATE_WRITE = 23  # <linux/mman.h>
_PAGE = mmap.PAGESIZE


class _Prefaulter:
    """One daemon thread that populates the byte ranges it is given, in order."""

    def __init__(self) -> None:
        self.enabled = False
        self.populated = 0  # bytes, for tests and curiosity
        self._queue: queue.SimpleQueue[tuple[Any, int, int]] = queue.SimpleQueue()
        self._madvise: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        libc_name = ctypes.util.find_library("c")
        if libc_name is None:
            return
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)  # CDLL calls release the GIL
            self._madvise = libc.madvise
        except (OSError, AttributeError):
            return
        self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._madvise.restype = ctypes.c_int
        probe = np.empty(4 * _PAGE, dtype=np.uint8)
        self.enabled = self._populate(probe, 0, probe.nbytes)

    def _populate(self, owner: np.ndarray, start: int, stop: int) -> bool:
        """``madvise`` the whole pages of ``owner``'s bytes [start, stop)."""
        base = owner.ctypes.data
        first = -(-(base + start) // _PAGE) * _PAGE
        last = (base + stop) // _PAGE * _PAGE
        if last <= first:
            return True
        if self._madvise(first, last - first, MADV_POPULATE_WRITE) != 0:
            return False
        self.populated += last - first
        return True

    def request(self, owner: np.ndarray, start: int, stop: int) -> None:
        """Populate ``owner``'s bytes [start, stop) soon (``owner`` is kept alive till then)."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hivemem-prefault", daemon=True
                )
                self._thread.start()
        self._queue.put((owner, start, stop))

    def _run(self) -> None:
        while True:
            owner, start, stop = self._queue.get()
            if not self._populate(owner, start, stop):
                log.info("madvise(MADV_POPULATE_WRITE) failed; prefaulting stops")
                self.enabled = False
                return


PREFAULTER = _Prefaulter()


def prefault(owner: np.ndarray, start: int, stop: int) -> None:
    """Ask for the pages of ``owner``'s bytes [start, stop) to be faulted in ahead of use."""
    PREFAULTER.request(owner, start, stop)
