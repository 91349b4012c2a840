"""How the store's large matrices get their memory: own mappings, grown in place, faulted in ahead.

The first write to a page of fresh memory costs a page fault, and on a virtual machine
whose host backs guest memory lazily it costs far more. Three things follow, all measured
on this project's 2-core Firecracker VM:

- **Growth in place.** A matrix of 1 MiB or more lives in an anonymous mapping of its own
  (:class:`GrowingMatrix`), which grows with ``mremap``: its rows keep their pages, where
  a copy into a fresh matrix would fault every page in again (and hold both meanwhile).
- **No transparent huge pages by default.** numpy asks Linux for huge pages
  (``MADV_HUGEPAGE``) on every array of 4 MiB or more. Where the kernel then compacts
  memory to make a 2 MiB page at fault time (``defrag`` set to ``madvise``, the common
  default) and the host backs the guest with 4 KiB pages, a fresh huge-page region
  filled at 0.37-0.45 GB/s against 1.3-1.55 GB/s for the same region in 4 KiB pages
  (7-9 GB/s once touched). :func:`fresh_matrix` gives large matrices a mapping of their
  own and advises what ``huge_pages`` says (``IndexConfig.huge_pages``: turn it on on
  bare metal, where a huge-page fault is the cheaper one).
- **Faults ahead of the writer, between the owner thread's requests.** A vector index that
  grows writes every new vector into fresh pages, on the bus's owner thread.
  :func:`prefault` asks the kernel to populate the pages just ahead of the write cursor
  instead (``madvise(MADV_POPULATE_WRITE)``, Linux 5.14+), as ``IndexConfig.prefault``
  says: by default the request waits in the writing thread's queue, and the bus
  server's owner thread does it a chunk before each poll (:func:`prefault_while_idle`),
  so the faults mostly fall in the gaps between requests, not inside a write; or a
  daemon thread populates at once (``thread``: on 2 cores shared with the bus's
  clients, it took the CPU they needed). Populating never changes a page's contents, so
  it is safe while the owner writes the same rows: the kernel serialises the two, and
  whichever comes second finds the page present.

Where these calls are not available (another OS, an older kernel), matrices come from
``np.empty`` and :func:`prefault` does nothing: the writer faults the pages itself.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import queue
import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np

log = logging.getLogger(__name__)

MADV_POPULATE_WRITE = 23  # <linux/mman.h>
_PAGE = mmap.PAGESIZE


class _Prefaulter:
    """Populates the byte ranges of matrices it is given, in order: on a daemon thread, or
    in the idle time of the thread that asked."""

    def __init__(self) -> None:
        self.enabled = False
        self.populated = 0  # bytes, for tests and curiosity
        self._queue: queue.SimpleQueue[tuple[GrowingMatrix, int, int]] = queue.SimpleQueue()
        self._madvise: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._local = threading.local()  # each thread's requests for its idle time
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
        self.enabled = self._populate(probe.ctypes.data, 0, probe.nbytes)

    def _populate(self, base: int, start: int, stop: int) -> bool:
        """``madvise`` the whole pages of the bytes [base + start, base + stop)."""
        first = -(-(base + start) // _PAGE) * _PAGE
        last = (base + stop) // _PAGE * _PAGE
        if last <= first:
            return True
        if self._madvise(first, last - first, MADV_POPULATE_WRITE) != 0:
            return False
        self.populated += last - first
        return True

    def _populate_matrix(self, matrix: GrowingMatrix, start: int, stop: int) -> bool:
        """Populate ``matrix``'s bytes [start, stop) under its lock (it cannot move meanwhile)."""
        with matrix.lock:
            array = matrix.array
            if array is None:
                return True
            base, size = array.ctypes.data, array.nbytes
            del array  # no view may outlive the lock: it would stop the matrix growing in place
            return self._populate(base, start, min(stop, size))

    def request(self, matrix: GrowingMatrix, start: int, stop: int, thread: bool) -> None:
        """Populate ``matrix``'s bytes [start, stop) soon: by the daemon thread if
        ``thread``, else when this thread calls :meth:`work_while_idle`."""
        if not self.enabled:
            return
        if not thread:
            idle = getattr(self._local, "idle", None)
            if idle is not None:  # else this thread never idles here: the writer faults
                idle.append((matrix, start, stop))
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hivemem-prefault", daemon=True
                )
                self._thread.start()
        self._queue.put((matrix, start, stop))

    def accept_idle(self) -> None:
        """Keep this thread's idle-time requests from now on (it will do them)."""
        self._local.idle = collections.deque(maxlen=IDLE_QUEUE)

    def work_while_idle(self, chunk: int) -> bool:
        """Populate up to ``chunk`` bytes this thread asked for; False if it asked nothing."""
        idle = getattr(self._local, "idle", None)
        if not idle:
            return False
        matrix, start, stop = idle[0]
        end = min(stop, start + chunk)
        if end >= stop:
            idle.popleft()
        else:
            idle[0] = (matrix, end, stop)
        if not self._populate_matrix(matrix, start, end):
            log.info("madvise(MADV_POPULATE_WRITE) failed; prefaulting stops")
            self.enabled = False
            idle.clear()
        return True

    def _run(self) -> None:
        while True:
            matrix, start, stop = self._queue.get()
            if not self._populate_matrix(matrix, start, stop):
                log.info("madvise(MADV_POPULATE_WRITE) failed; prefaulting stops")
                self.enabled = False
                return


IDLE_QUEUE = 256
"""Requests a thread keeps for its idle time; older ones are dropped."""

PREFAULTER = _Prefaulter()


_OWN_MAPPING_FROM = 1 << 20  # bytes; smaller matrices come from the allocator
_ADVICE = {
    True: getattr(mmap, "MADV_HUGEPAGE", None),
    False: getattr(mmap, "MADV_NOHUGEPAGE", None),
}


class GrowingMatrix:
    """A C-ordered (rows, cols) matrix in an anonymous mapping of its own, grown in place.

    :meth:`grow` extends the mapping with ``mremap`` (``mmap.resize``): the rows written
    so far keep their pages, so growing copies nothing and faults nothing in again (a
    copy into a fresh matrix costs both, and twice the memory while it runs); rows not
    yet written cost nothing. ``mmap`` refuses while any numpy view of the matrix is
    alive, and then :meth:`grow` changes nothing and says so: the owner must hold no
    view but :attr:`array`. The prefault thread reads the matrix under :attr:`lock`.

    Args:
        rows: Rows.
        cols: Columns.
        dtype: A numpy dtype.
        huge_pages: Whether to advise transparent huge pages (see the module docstring).
    """

    def __init__(self, rows: int, cols: int, dtype: Any, huge_pages: bool = False) -> None:
        self.dtype, self.cols = np.dtype(dtype), cols
        self.lock = threading.Lock()
        flags, advice = _ANONYMOUS, _ADVICE[huge_pages]
        if flags is None or advice is None:
            raise OSError("no anonymous mappings with huge-page advice here (see supported())")
        self._block = mmap.mmap(-1, self._nbytes(rows), flags=flags)
        with contextlib.suppress(OSError):  # a kernel without THP: no advice to take
            self._block.madvise(advice)
        self.array: np.ndarray | None = self._view()

    @staticmethod
    def supported(huge_pages: bool = False) -> bool:
        """Whether this platform has anonymous mappings, the advice and ``mremap``."""
        return _ADVICE[huge_pages] is not None and _ANONYMOUS is not None

    def _nbytes(self, rows: int) -> int:
        return max(1, rows) * self.cols * self.dtype.itemsize

    def _view(self) -> np.ndarray:
        return np.frombuffer(self._block, dtype=self.dtype).reshape(-1, self.cols)

    def grow(self, rows: int) -> bool:
        """Room for ``rows`` rows, in place; False (nothing changed) if a view is alive."""
        with self.lock:
            self.array = None
            try:
                self._block.resize(self._nbytes(rows))
                return True
            except (BufferError, OSError, SystemError):
                return False
            finally:
                self.array = self._view()


_ANONYMOUS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS if hasattr(mmap, "MAP_ANONYMOUS") else None


def fresh_matrix(
    rows: int, cols: int, dtype: Any, huge_pages: bool = False
) -> tuple[np.ndarray, GrowingMatrix | None]:
    """An uninitialised C-ordered (rows, cols) array, and its :class:`GrowingMatrix`.

    From 1 MiB on (where the platform allows), the array is a :class:`GrowingMatrix`'s,
    in a mapping of its own (returned to the system when freed) advised for or against
    transparent huge pages as ``huge_pages`` says; smaller ones come from ``np.empty``
    (no matrix: None).
    """
    dtype = np.dtype(dtype)
    if rows * cols * dtype.itemsize < _OWN_MAPPING_FROM or not GrowingMatrix.supported(huge_pages):
        return np.empty((rows, cols), dtype=dtype), None
    matrix = GrowingMatrix(rows, cols, dtype, huge_pages)
    return cast(np.ndarray, matrix.array), matrix


def prefault(matrix: GrowingMatrix, start: int, stop: int, thread: bool = False) -> None:
    """Ask for the pages of ``matrix``'s bytes [start, stop) to be faulted in ahead of use:
    by the prefault thread if ``thread``, else in this thread's idle time."""
    PREFAULTER.request(matrix, start, stop, thread)


def prefault_while_idle(chunk: int) -> bool:
    """Fault in up to ``chunk`` bytes of what this thread asked for (:func:`prefault`);
    False if nothing is waiting. Call when the thread has nothing else to do."""
    return PREFAULTER.work_while_idle(chunk)


def idle_prefaulter() -> Callable[[int], bool]:
    """Make the calling thread one whose writes leave their prefaults for its idle time,
    and return what does them (:func:`prefault_while_idle`).

    A bus server's owner thread calls this. In any other thread, idle-time prefaults are
    not asked for at all (nothing would do them, and a queue would keep the matrices
    alive): the writer faults the pages in as it writes.
    """
    PREFAULTER.accept_idle()
    return prefault_while_idle
