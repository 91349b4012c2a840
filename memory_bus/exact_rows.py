"""The exact part of a vector index: ids and vectors in rows, with room taken ahead.

:class:`~hivemem.memory_bus.index.VectorIndex` searches these rows exactly (one BLAS
product) and merges them into its approximate structure when there are enough. This
module keeps their memory: how the matrices grow, when they take all the room they will
need at once, and which pages are faulted in ahead (see :mod:`hivemem.memory_bus.pages`
for why each matters on a virtual machine). Rows are never ordered: a removal moves the
last row into the gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
from hivemem.memory_bus.config import Prefault
from hivemem.memory_bus.pages import GrowingMatrix, fresh_matrix, prefault

RESERVE_FROM = 1_024  # rows after which the matrix grows to the index's ceiling at once
RESERVE_MAX = 1 << 16  # rows taken at once at most; past that, doubling again
SMALL_GROWTH = 4  # how a matrix under RESERVE_FROM rows grows (see ExactRows._grow)


class ExactRows:
    """Ids and (dim,) float32 vectors in rows ``0 .. n-1`` of two matrices with spare room.

    Args:
        dim: Vector dimension.
        huge_pages: Whether large matrices advise transparent huge pages.
        prefault: Who faults in the pages just ahead of the last row
            (``IndexConfig.prefault``).
        ceiling: The most rows the index will keep here now (None: no bound), asked
            only when the matrices must grow.
    """

    def __init__(
        self,
        dim: int,
        huge_pages: bool = False,
        prefault: Prefault = Prefault.OFF,
        ceiling: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.dim, self.huge_pages, self.prefault = dim, huge_pages, prefault
        self._ceiling = ceiling
        self.n = 0  # rows in use
        self.matrix: GrowingMatrix | None = None  # the mapping the vectors live in, if own
        self.faulted = 0  # rows of the matrix asked to be faulted in ahead
        self._ids = np.empty(0, dtype=np.int64)
        self._vecs = np.empty((0, dim), dtype=np.float32)
        self._norm = 0.0  # the largest norm of rows 0 .. _normed-1 (see norm_bound)
        self._normed = 0

    @property
    def ids(self) -> np.ndarray:
        """The ids of the rows in use (a view)."""
        return self._ids[: self.n]

    @property
    def vecs(self) -> np.ndarray:
        """The (n, dim) vectors of the rows in use (a view)."""
        return self._vecs[: self.n]

    @property
    def capacity(self) -> int:
        """Rows there is room for without growing."""
        return len(self._ids)

    def norm_bound(self) -> float:
        """An upper bound on the L2 norms of the rows in use (a search's candidate margin).

        Measured on the rows added since the last call (on the read path, not on every
        write); a removal leaves it an upper bound still.
        """
        if self._normed < self.n:
            new = self._vecs[self._normed : self.n]
            self._norm = max(self._norm, float(np.sqrt(np.einsum("ij,ij->i", new, new).max())))
            self._normed = self.n
        return self._norm

    def row_vectors(self, rows: list[int]) -> np.ndarray:
        """A new matrix of the vectors of ``rows``."""
        return self._vecs[rows]

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows at the end."""
        n = self.n
        need = n + len(ids)
        if need > len(self._ids):
            self._grow(need)
        self._ids[n:need] = ids
        self._vecs[n:need] = vectors
        self.n = need
        if self.prefault is not Prefault.OFF and self.matrix is not None:
            self._prefault(self.matrix, need)

    def append_one(self, item_id: int, vector: np.ndarray) -> None:
        """:meth:`append` of one id (a Python int) and its (dim,) vector."""
        n = self.n
        if n == len(self._ids):
            self._grow(n + 1)
        self._ids[n] = item_id
        self._vecs[n] = vector
        self.n = n + 1

    def move_last_to(self, row: int) -> int | None:
        """Drop ``row`` by moving the last row into it; the id moved, or None if none was."""
        last = self.n - 1
        self.n = last
        if row == last:
            return None
        moved = int(self._ids[last])
        self._ids[row] = moved
        self._vecs[row] = self._vecs[last]
        if last >= self._normed:  # a row not yet measured moves below the measured ones
            self._normed = min(self._normed, row)
        return moved

    def copies(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the ids and vectors in use (the rows stay).

        The vectors go into a mapping of their own (:func:`fresh_matrix`), as these do:
        numpy advises huge pages for large arrays, and with the kernel's THP defrag set
        to ``madvise`` (as here) a first touch may wait for memory compaction.
        """
        vecs, _ = fresh_matrix(self.n, self.dim, np.float32, self.huge_pages)
        vecs[:] = self.vecs
        return self.ids.copy(), vecs

    def clear(self) -> None:
        """Drop every row and the matrices (a caller holds the copies it needs)."""
        self._ids, self._vecs = self._ids[:0].copy(), np.empty((0, self.dim), np.float32)
        self.n, self.matrix = 0, None
        self._norm, self._normed = 0.0, 0

    def _grow(self, need: int) -> None:
        # Under a thousand rows the matrix comes from the allocator and each growth copies
        # every row into new memory: growing 4x copies half as much as doubling (batched
        # writes into 100 filling namespaces: 0.58-0.68 -> 0.66-0.71 x the echo, three
        # interleaved runs), and the rows not yet written are never touched.
        factor = SMALL_GROWTH if len(self._ids) < RESERVE_FROM else 2
        cap = max(need, factor * len(self._ids), 16)
        ceiling = self._ceiling()
        if ceiling is not None and cap > RESERVE_FROM and need <= ceiling:
            # Past a thousand rows, take room for every row the exact part can hold
            # before it is merged into the approximate structure (at most RESERVE_MAX
            # rows, whatever the threshold): the rows not yet written cost no memory
            # (their pages are untouched). A mapping grows in place anyway (below); where
            # it cannot (a view alive, no mremap), each doubling would copy every row
            # into fresh pages, which on a virtual machine cost a page fault each.
            cap = max(need, min(ceiling, max(cap, RESERVE_MAX)))
        ids = np.empty(cap, dtype=np.int64)  # np.resize would write every new slot
        ids[: self.n] = self.ids
        self._ids = ids
        if self.matrix is not None:
            # In place: the rows so far keep their pages (and those faulted in ahead).
            # Nothing holds a view of the matrix but _vecs, dropped for the move.
            self._vecs = None  # type: ignore[assignment]
            try:
                grown_in_place = self.matrix.grow(cap)
            finally:
                self._vecs = cast(np.ndarray, self.matrix.array)
            if grown_in_place:
                return
        grown, self.matrix = fresh_matrix(cap, self.dim, np.float32, self.huge_pages)
        grown[: self.n] = self.vecs
        self._vecs = grown
        self.faulted = self.n

    def _prefault(self, matrix: GrowingMatrix, need: int) -> None:
        """Have the rows just past ``need`` faulted in, if not asked before."""
        ahead = self._ahead(need)
        if need + ahead > self.faulted:
            # The rows a room-taking growth reserved are fresh pages: have them faulted
            # in before they are written (see hivemem.memory_bus.pages).
            stop = min(len(self._vecs), need + 2 * ahead)
            start = max(self.faulted, need)
            row_bytes = self.dim * 4
            thread = self.prefault is Prefault.THREAD
            prefault(matrix, start * row_bytes, stop * row_bytes, thread)
            self.faulted = stop

    def _ahead(self, rows: int) -> int:
        """Rows ahead of the writer whose pages are faulted in.

        Up to 2 MiB, and at most an eighth of the rows held, so that memory faulted in
        but not yet used stays within a quarter of what a namespace holds (a private
        tier has many namespaces).
        """
        return min(max(64, (2 << 20) // (4 * self.dim)), rows // 8)
