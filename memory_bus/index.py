"""The vector index of one namespace: exact while small, approximate (faiss) when large.

Score contract: the score is the inner product of query and item vector. For the unit
vectors every built-in embedder makes, that is the cosine similarity. **Higher is more
similar**, on the exact and the approximate path alike (faiss ``METRIC_INNER_PRODUCT``).
Ties are broken by the lower id, so results are deterministic.

Structure:

- an *exact part* (:class:`~hivemem.memory_bus.exact_rows.ExactRows`): a numpy matrix with
  an id per row. Removal swaps in the last row, so it costs O(1); search is one BLAS
  matrix product. For the many small namespaces of a private tier this beats a faiss
  call per namespace (no per-index C++ object, no call overhead).
- an *approximate part* (HNSW or IVF, faiss) built once the namespace passes
  ``approx_threshold`` items. faiss HNSW cannot remove vectors, so removed ones become
  tombstones, filtered from results by over-fetching, and the structure is rebuilt when
  tombstones pass a quarter of it. New vectors land in the exact part first and are merged
  into the approximate part ``build_batch`` at a time, so a write never pays for graph
  construction of one vector at a time, and new items are found immediately.

Builds and merges of ``_BACKGROUND_FROM`` rows or more run on the builder thread
(:mod:`hivemem.memory_bus.index_build`) unless the config says ``build: inline``: the
rows stay in the exact part, searched exactly, until the structure is done; it is
installed by the first write or search after that. Rows removed meanwhile become its
tombstones. A tombstone rebuild runs there too, while the old structure keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from hivemem.memory_bus.config import IndexBuild, IndexConfig, IndexKind
from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.exact_rows import ExactRows
from hivemem.memory_bus.exact_search import best, pair_scores, search_small, top_k
from hivemem.memory_bus.index_build import (
    BUILDER,
    Build,
    extended,
    filled,
    new_structure,
    reconstruct,
)
from hivemem.memory_bus.item import check_matrix

log = logging.getLogger(__name__)

# Batched exact search inside faiss uses BLAS only above this many queries; DESIGN.md
# measured 7-9x faster batched search with a low threshold.
faiss.cvar.distance_compute_blas_threshold = 16

_REBUILD_FRACTION = 0.25
_TINY = 32  # up to this many exact rows, one query's scores are ranked by Python's sort
_IVF_MIN_POINTS_PER_LIST = 39
_BACKGROUND_FROM = 1_024  # rows from which a build runs on the builder thread (at the 1.7-3k
# inserts/s measured for 384-d HNSW, 0.3-0.6 s inline)


class VectorIndex:
    """Ids and vectors of one namespace, searchable by inner product.

    Args:
        dim: Vector dimension.
        config: Which structure to use and when.
        seed: Seeds the approximate structures that draw random numbers.
    """

    def __init__(self, dim: int, config: IndexConfig | None = None, seed: int = 0) -> None:
        self.dim = dim
        self.config = config or IndexConfig()
        self.seed = seed
        self._exact = ExactRows(
            dim, self.config.huge_pages, self.config.prefault, self._exact_ceiling
        )
        self._rows: dict[int, int] | None = None  # id -> row of the exact part (see _row)
        self._approx: Any = None
        self._labels = np.empty(0, dtype=np.int64)  # approximate label -> id
        self._dead = np.empty(0, dtype=bool)  # approximate label -> tombstoned
        self._label: dict[int, int] = {}  # id -> approximate label (live only)
        self._build: Build | None = None  # a build on the builder thread, not yet installed
        self._generation = 0  # bumped whenever the approximate part is replaced or extended

    # --- size and membership ----------------------------------------------------------

    @property
    def kind(self) -> str:
        """The structure in use now: ``flat`` (exact only), ``hnsw`` or ``ivf``."""
        if self._approx is None:
            return "flat"
        return "hnsw" if isinstance(self._approx, faiss.IndexHNSWFlat) else "ivf"

    @property
    def building(self) -> bool:
        """True while a build on the builder thread is not yet installed."""
        return self._build is not None

    def __len__(self) -> int:
        return self._exact.n + len(self._label)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row or item_id in self._label

    @property
    def _row(self) -> dict[int, int]:
        """Id -> row of the exact part, built on first use.

        A namespace that is only written to never needs it, so it starts unbuilt
        (``_rows`` None) rather than taking every id as it is appended: that cost a
        64-row batch 12-18 us of its ~250 us. The first lookup (a removal, a membership
        test, ``vectors_of``) builds it from the ids in one pass; from then on appends
        keep it up to date.
        """
        rows = self._rows
        if rows is None:
            exact = self._exact
            rows = self._rows = dict(zip(exact.ids.tolist(), range(exact.n), strict=True))
        return rows

    # --- mutation ---------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new ids.

        Raises:
            InvalidInputError: an id already present or repeated; shapes that disagree.
            DimensionMismatchError, NonFiniteError: bad vectors. Nothing is added.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = check_matrix(vectors, self.dim)
        if len(ids) != len(vectors):
            raise InvalidInputError("ids", f"{len(ids)} ids for {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids) or any(int(i) in self for i in ids):
            raise InvalidInputError("ids", "duplicate id")
        self._append_exact(ids, vectors)
        self._maybe_grow()

    def add_checked(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """:meth:`add` for ids the store has just allocated and vectors its tier has checked.

        The namespace calls this on its write path, where those checks already ran.
        """
        self._append_exact(ids, vectors)
        self._maybe_grow()

    def add_one_checked(self, item_id: int, vector: np.ndarray) -> None:
        """:meth:`add_checked` of one id (a Python int) and its (dim,) vector."""
        if self._rows is not None:
            self._rows[item_id] = self._exact.n
        self._exact.append_one(item_id, vector)
        self._maybe_grow()

    def _append_exact(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self._rows is not None:
            start = self._exact.n
            self._rows.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
        self._exact.append(ids, vectors)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; unknown ones are ignored. Returns how many were removed."""
        return self.remove_ids(np.asarray(ids, dtype=np.int64).reshape(-1).tolist())

    def remove_ids(self, ids: list[int]) -> int:
        """:meth:`remove` of a list of Python ints."""
        removed = 0
        for item_id in ids:
            if item_id in self._row:
                self._remove_exact(item_id)
                removed += 1
            elif item_id in self._label:
                self._dead[self._label.pop(item_id)] = True
                removed += 1
            else:
                continue
            if self._build is not None:
                self._build.removed.add(item_id)
        rebuilding = self._build is not None and self._build.fresh
        dead = np.count_nonzero(self._dead)
        if (
            self._approx is not None
            and not rebuilding
            and dead > _REBUILD_FRACTION * len(self._dead)
        ):
            self._rebuild()
        return removed

    def _remove_exact(self, item_id: int) -> None:
        row = self._row.pop(item_id)
        moved = self._exact.move_last_to(row)
        if moved is not None:
            self._row[moved] = row

    # --- approximate part -------------------------------------------------------------

    def _maybe_grow(self) -> None:
        if self._build is not None:
            self._poll_build()
            if self._build is not None:
                return
        if self._approx is None:
            if self._wants_approx_for(len(self)):
                self._rebuild()
        elif self._exact.n >= self.config.build_batch:
            if self._in_background(self._exact.n):
                ids, vecs = self._exact.copies()
                base = self._approx
                self._start(ids, lambda: extended(base, vecs), fresh=False)
            else:
                self.flush()

    def _in_background(self, rows: int) -> bool:
        return self.config.build is IndexBuild.BACKGROUND and rows >= _BACKGROUND_FROM

    def _empty_exact(self) -> None:
        """Drop the exact part's rows and its matrix (the caller holds copies it needs)."""
        self._exact.clear()
        self._rows = None

    def _start(self, ids: np.ndarray, make: Any, *, fresh: bool) -> None:
        self._build = BUILDER.start(
            Build(ids, make, fresh=fresh, generation=self._generation, exact_rows=self._exact.n)
        )

    def _poll_build(self, wait: bool = False) -> None:
        """Install the build if it is done, ``wait`` is set, or the backlog is full."""
        build = self._build
        if build is None:
            return
        bound = self.config.max_backlog
        if (
            wait
            or build.done()
            or (bound is not None and self._exact.n - build.exact_rows >= bound)
        ):
            self._install()

    def _install(self) -> None:
        """Put the finished build in place (waiting for it): its rows leave the exact part."""
        build, self._build = self._build, None
        if build is None or build.generation != self._generation:
            return  # the approximate part changed since it started: its rows are still here
        try:
            structure = build.wait()
        except Exception:  # the rows stay exact; the next write past the threshold retries
            log.exception("building the approximate index failed")
            return
        removed = np.fromiter(build.removed, dtype=np.int64, count=len(build.removed))
        exact = self._exact.ids
        built = np.isin(exact, build.ids) & ~np.isin(exact, removed)  # rows it now holds
        live = exact
        if build.fresh and self._approx is not None:
            live = np.concatenate([exact, self._labels[~self._dead]])
        alive = np.isin(build.ids, live) & ~np.isin(build.ids, removed)
        start = 0 if build.fresh else len(self._labels)
        if build.fresh:
            self._labels, self._dead, self._label = build.ids[:0], np.empty(0, bool), {}
        self._approx = structure
        self._labels = np.concatenate([self._labels, build.ids])
        self._dead = np.concatenate([self._dead, ~alive])
        kept = np.flatnonzero(alive)
        self._label.update(zip(build.ids[kept].tolist(), (start + kept).tolist(), strict=True))
        self._generation += 1
        rest_ids, rest_vecs = exact[~built], self._exact.vecs[~built]
        self._empty_exact()
        self._append_exact(rest_ids, rest_vecs)

    def finish_build(self) -> None:
        """Wait for the build under way on the builder thread, if any, and install it."""
        self._poll_build(wait=True)

    def flush(self) -> None:
        """Merge the exact part into the approximate structure now (if there is one).

        A build under way is waited for and installed first.
        """
        self._poll_build(wait=True)
        if self._approx is None or self._exact.n == 0:
            return
        ids, vecs = self._exact.copies()
        self._empty_exact()
        self._generation += 1
        self._approx_add(ids, vecs)

    def _approx_add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        start = len(self._labels)
        self._approx.add(vecs)
        self._labels = np.concatenate([self._labels, ids])
        self._dead = np.concatenate([self._dead, np.zeros(len(ids), dtype=bool)])
        for offset, item_id in enumerate(ids.tolist()):
            self._label[item_id] = start + offset

    def _rebuild(self) -> None:
        """Build the approximate structure afresh from every live vector.

        In the background (see the module docstring) the exact rows and the live labels
        are taken now and the old structure serves until the new one is installed;
        inline, it is replaced here.
        """
        if self._build is not None:
            self._build.cancelled = True  # this build takes its rows too
            self._build = None
        self._generation += 1
        if self._wants_approx_for(len(self)) and self._in_background(len(self)):
            exact_ids, exact_vecs = self._exact.copies()
            base, keep = self._approx, np.flatnonzero(~self._dead)
            ids = np.concatenate([exact_ids, self._labels[keep]])

            def make() -> Any:
                vecs = exact_vecs
                if base is not None and len(keep):
                    vecs = np.concatenate([exact_vecs, reconstruct(base, keep, self.dim)])
                return filled(self._new_structure(vecs), vecs)

            self._start(ids, make, fresh=True)
            return
        ids, vecs = self._live()
        self._empty_exact()
        self._approx, self._labels, self._dead, self._label = None, ids[:0], np.empty(0, bool), {}
        if not self._wants_approx_for(len(ids)):
            self._append_exact(ids, vecs)
            return
        self._approx = self._new_structure(vecs)
        self._approx_add(ids, vecs)

    def _exact_ceiling(self) -> int | None:
        """Most rows the exact part holds before a merge into the approximate part (None: no bound)."""
        cfg = self.config
        if self._approx is not None:
            return cfg.build_batch
        if cfg.kind is IndexKind.AUTO:
            return cfg.approx_threshold
        return None

    def _wants_approx_for(self, n: int) -> bool:
        kind = self.config.kind
        if kind is IndexKind.AUTO:
            return n >= self.config.approx_threshold
        if kind is IndexKind.IVF:
            return n >= self.config.ivf_nlist * _IVF_MIN_POINTS_PER_LIST
        return kind is IndexKind.HNSW and n > 0

    def _new_structure(self, train: np.ndarray) -> Any:
        return new_structure(self.dim, self.config, self.seed, train)

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live id and vector, exact part first."""
        ids = [self._exact.ids]
        vecs = [self._exact.vecs]
        if self._approx is not None and len(self._labels):
            keep = np.flatnonzero(~self._dead)
            ids.append(self._labels[keep])
            vecs.append(reconstruct(self._approx, keep, self.dim))
        return np.concatenate(ids), np.concatenate(vecs).astype(np.float32, copy=False)

    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """A new (n, dim) matrix of the stored vectors of ``ids`` (each must be present)."""
        rows = self._row
        if all(i in rows for i in ids):
            return self._exact.row_vectors([rows[i] for i in ids])
        return np.stack(
            [
                self._exact.row_vectors([rows[i]])[0]
                if i in rows
                else self._approx.reconstruct(self._label[i])
                for i in ids
            ]
        ).astype(np.float32, copy=False)

    # --- search -----------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ids per query, best first.

        Returns:
            ``(scores, ids)``, float32 and int64 arrays of shape (m, k); missing places
            hold score ``-inf`` and id ``-1``.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError("k", f"expected a positive int, got {k!r}")
        queries = check_matrix(queries, self.dim, "queries")
        if self._build is not None:
            self._poll_build()
        exact = self._exact
        if self._approx is None or not len(self._label):
            return search_small(exact.ids, exact.vecs, queries, k, exact.norm_bound())
        parts = [
            best(exact.ids, exact.vecs, queries, k, exact.norm_bound()),
            self._search_approx(queries, k),
        ]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        return top_k(scores, ids, k)

    def top_tiny(self, query: np.ndarray, k: int) -> list[tuple[float, int]] | None:
        """The ``k`` best ``(score, id)`` of one query, best first, for a tiny exact index.

        ``query`` is a checked (1, dim) float32 matrix, as :meth:`search` takes it. This
        is :meth:`search` for the many small namespaces of a private tier without its
        per-call numpy overhead: every row is scored as :meth:`search` scores its
        candidates (:func:`~hivemem.memory_bus.exact_search.pair_scores`), so the scores
        are the same bits, and ranked by Python's sort in the same order (score, then the
        lower id). Returns None when the index is not tiny and exact, or a score is NaN;
        then call :meth:`search`.
        """
        exact = self._exact
        if self._approx is not None or exact.n > _TINY:
            return None
        if exact.n == 0:
            return []
        scores = pair_scores(query[0], exact.vecs).tolist()  # every row: a few, cheaply
        if any(s != s for s in scores):
            return None
        ranked = sorted(zip([-s for s in scores], exact.ids.tolist(), strict=True))[:k]
        return [(-negated, item_id) for negated, item_id in ranked]

    def _search_approx(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dead = int(np.count_nonzero(self._dead))  # a bool sum() is 14x slower at 1M labels
        fetch = min(len(self._labels), k + min(dead, 4 * k + 32))
        scores, labels = self._approx.search(queries, fetch)
        ids = np.where(labels >= 0, self._labels[np.maximum(labels, 0)], -1)
        alive = (labels >= 0) & ~self._dead[np.maximum(labels, 0)]
        return np.where(alive, scores, -np.inf).astype(np.float32), np.where(alive, ids, -1)

    # --- state ------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A msgpack-safe snapshot; an approximate structure travels serialized, not rebuilt."""
        state: dict[str, Any] = {
            "dim": self.dim,
            "ids": self._exact.ids.tobytes(),
            "vecs": self._exact.vecs.tobytes(),
            "approx": None,
        }
        if self._approx is not None:
            state["approx"] = {
                "index": faiss.serialize_index(self._approx).tobytes(),
                "labels": self._labels.tobytes(),
                "dead": np.packbits(self._dead).tobytes(),
            }
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], config: IndexConfig | None = None) -> VectorIndex:
        """Inverse of :meth:`to_state`."""
        index = cls(int(state["dim"]), config)
        ids = np.frombuffer(state["ids"], dtype=np.int64)
        vecs = np.frombuffer(state["vecs"], dtype=np.float32).reshape(-1, index.dim)
        index._append_exact(ids, vecs)  # copied into the exact part's own matrices
        approx = state.get("approx")
        if approx is not None:
            raw = np.frombuffer(approx["index"], dtype=np.uint8).copy()
            index._approx = faiss.deserialize_index(raw)
            index._labels = np.frombuffer(approx["labels"], dtype=np.int64).copy()
            dead = np.unpackbits(np.frombuffer(approx["dead"], dtype=np.uint8))
            index._dead = dead[: len(index._labels)].astype(bool)
            alive = np.flatnonzero(~index._dead)
            index._label = dict(zip(index._labels[alive].tolist(), alive.tolist(), strict=True))
        index._maybe_grow()  # a state saved while a build ran: start it again
        return index
