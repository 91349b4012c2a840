"""How the store's large matrices get their memory: own mappings, faulted in ahead.

The first write to a page of fresh memory costs a page fault, and on a virtual machine
whose host backs guest memory lazily it costs far more. Two things follow, both measured
on this project's 2-core Firecracker VM:

- **No transparent huge pages by default.** numpy asks Linux for huge pages
  (``MADV_HUGEPAGE``) on every array of 4 MiB or more. Where the kernel then compacts
  memory to make a 2 MiB page at fault time (``defrag`` set to ``madvise``, the common
  default) and the host backs the guest with 4 KiB pages, a fresh huge-page region
  filled at 0.37-0.45 GB/s against 1.3-1.55 GB/s for the same region in 4 KiB pages
  (7-9 GB/s once touched). :func:`fresh_matrix` gives large matrices a mapping of their
  own and advises what ``huge_pages`` says (``IndexConfig.huge_pages``: turn it on on
  bare metal, where a huge-page fault is the cheaper one).
- **Faults off the owner thread.** A vector index that grows writes every new vector
  into fresh pages, on the bus's owner thread. :func:`prefault` asks the kernel to
  populate the pages just ahead of the write cursor from a daemon thread instead
  (``madvise(MADV_POPULATE_WRITE)``, Linux 5.14+). Populating never changes a page's
  contents, so it is safe while the owner writes the same rows: the kernel serialises
  the two, and whichever comes second finds the page present.

Where these calls are not available (another OS, an older kernel), matrices come from
``np.empty`` and :func:`prefault` does nothing: the writer faults the pages itself.
"""

from __future__ import annotations

import contextlib
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


_OWN_MAPPING_FROM = 1 << 20  # bytes; smaller matrices come from the allocator
_ADVICE = {
    True: getattr(mmap, "MADV_HUGEPAGE", None),
    False: getattr(mmap, "MADV_NOHUGEPAGE", None),
}


def fresh_matrix(rows: int, cols: int, dtype: Any, huge_pages: bool = False) -> np.ndarray:
    """An uninitialised C-ordered (rows, cols) array.

    From 1 MiB on, in an anonymous mapping of its own (returned to the system when the
    array is freed) advised for or against transparent huge pages as ``huge_pages`` says.

    Args:
        rows: Rows.
        cols: Columns.
        dtype: A numpy dtype.
        huge_pages: Whether a large matrix should use transparent huge pages.
    """
    dtype = np.dtype(dtype)
    nbytes = rows * cols * dtype.itemsize
    advice = _ADVICE[huge_pages]
    if nbytes < _OWN_MAPPING_FROM or advice is None or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.empty((rows, cols), dtype=dtype)
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # a kernel without THP: no advice to take
        block.madvise(advice)
    return np.frombuffer(block, dtype=dtype).reshape(rows, cols)


def prefault(owner: np.ndarray, start: int, stop: int) -> None:
    """Ask for the pages of ``owner``'s bytes [start, stop) to be faulted in ahead of use."""
    PREFAULTER.request(owner, start, stop)
