"""Builds of an index's approximate structure, run off the thread that owns the index.

faiss HNSW inserts 1.7-3k 384-d vectors a second on the 2-core machine measured, so
building it over 50,000 vectors took ~30 s there and merging 8,192 more into it ~7 s
(``benchmarks/index_stalls.py``). On the bus's owner thread every client waited that
long. A :class:`Build` does that work on the builder thread instead, one build at a time
for the whole process (so builds take one core at most, leaving the other to the bus),
from rows copied out of the index when the build starts; the index keeps searching those
rows exactly meanwhile and installs the result when it is done
(:class:`hivemem.memory_bus.index.VectorIndex`).

faiss releases the GIL while it builds, and the structure a merge extends is only read
(cloned) here, as searches on the owner thread read it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from hivemem.memory_bus.config import IndexConfig, IndexKind

log = logging.getLogger(__name__)


class Build:
    """One approximate structure being built by the builder thread.

    Args:
        ids: The ids of the rows built, in the order of their labels in the result.
        make: Builds and returns the structure (runs on the builder thread).
        fresh: True if the result replaces the approximate part (a first build or a
            rebuild), False if it extends it (a merge of exact rows).
        generation: The index's generation when the build started; an index whose
            approximate part changed since does not install it.
        exact_rows: Rows of the exact part the build took (its backlog is counted past them).

    Attributes:
        removed: Ids removed from the index since the build started (the owner thread
            adds them): they are tombstones of the result, even if added again since.
    """

    def __init__(
        self,
        ids: np.ndarray,
        make: Callable[[], Any],
        *,
        fresh: bool,
        generation: int,
        exact_rows: int,
    ) -> None:
        self.ids, self.fresh, self.generation, self.exact_rows = ids, fresh, generation, exact_rows
        self.removed: set[int] = set()
        self._make: Callable[[], Any] | None = make
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self.cancelled = False

    def run(self) -> None:
        """Build (on the builder thread); a cancelled build that has not started is skipped."""
        make, self._make = self._make, None  # drop the copied rows once built
        try:
            if make is not None and not self.cancelled:
                self._result = make()
        except BaseException as exc:  # raised again by wait(), on the owner thread
            self._error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        """True once the build has finished (or failed)."""
        return self._done.is_set()

    def wait(self) -> Any:
        """The built structure, waiting for it if need be.

        Raises:
            Exception: what building raised.
        """
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


class _Builder:
    """The process's builder thread: runs builds in the order they were started."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Build] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0  # the process whose thread it is (a forked child has none)

    def start(self, build: Build) -> Build:
        """Queue ``build`` on the builder thread, starting the thread if need be.

        Before the thread starts, faiss's Python interrupt callback goes, process-wide:
        faiss polls it during a build, and it takes the GIL to ask Python for a Ctrl-C
        that Python only ever delivers to the main thread. At interpreter exit the poll
        killed the builder thread inside faiss, and the process aborted ("terminate
        called without an active exception", 1 in 3 ``hivemem bus serve`` stopped during
        a build). Without it, a build left running at exit ends with the process.
        faiss calls on the main thread no longer stop at Ctrl-C midway (the store makes
        no long ones there: large builds run here).
        """
        with self._lock:
            if self._pid != os.getpid():
                faiss.InterruptCallback.clear_instance()  # type: ignore[attr-defined]  # not in its stubs
                self._queue = queue.SimpleQueue()
                thread = threading.Thread(target=self._run, name="hivemem-index-build", daemon=True)
                thread.start()
                self._pid = os.getpid()
            self._queue.put(build)
        return build

    def _run(self) -> None:
        # One OpenMP thread for builds (the setting is this thread's own): the bus's
        # owner thread keeps the other core of a two-core machine.
        faiss.omp_set_num_threads(1)
        jobs = self._queue
        while True:
            jobs.get().run()


def new_structure(dim: int, config: IndexConfig, seed: int, train: np.ndarray) -> Any:
    """An empty approximate structure of ``config.kind`` (IVF: trained on ``train``)."""
    cfg = config
    if cfg.kind is IndexKind.IVF:
        quantizer = faiss.IndexFlatIP(dim)
        index: Any = faiss.IndexIVFFlat(quantizer, dim, cfg.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(train)
        index.nprobe = cfg.ivf_nprobe
        index.make_direct_map()
        return index
    index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = cfg.hnsw_ef_construction
    index.hnsw.efSearch = cfg.hnsw_ef_search
    return index


def filled(structure: Any, vecs: np.ndarray) -> Any:
    """``structure`` with ``vecs`` added."""
    structure.add(vecs)
    return structure


def reconstruct(structure: Any, labels: np.ndarray, dim: int) -> np.ndarray:
    """The vectors of ``labels`` in an approximate structure, as a new matrix."""
    if isinstance(structure, faiss.IndexHNSWFlat):
        storage: Any = faiss.downcast_index(structure.storage)
        all_vecs = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * dim)
        return all_vecs.reshape(-1, dim)[labels]  # a view of the storage, then a copy
    return np.stack([structure.reconstruct(int(label)) for label in labels])


def extended(base: Any, vecs: np.ndarray) -> Any:
    """A copy of ``base`` with ``vecs`` added (a merge on the builder thread: searches
    keep reading ``base`` meanwhile, so it is not changed)."""
    return filled(faiss.clone_index(base), vecs)


BUILDER = _Builder()
