"""A full namespace's items as eviction candidates, kept in step while one write evicts.

A policy sees every candidate's features (``hivemem.memory_bus.features``). Building
that matrix is a pass over every item in Python, and a write of 64 items into a full
namespace evicts 64 times: built for each eviction, it cost 1.7 s a batch at a capacity
of 20,000 (measured, 2026-12-02). A :class:`CandidatePool` builds it once per write and
then follows the evictions: a victim's row leaves (the last row takes its place), and
each incoming item's row joins once its own evictions are done, so it is a candidate
for the items after it, as it would be in a matrix built afresh. The write's ``now`` is
the same throughout, so every row stays what :func:`candidate_features` would give. The
one column that depends on the incoming item, relevance, is computed only for policies
that read it, for all of a write's incoming items at once (:meth:`CandidatePool.expect`:
one matrix product instead of one per eviction, 135 -> 60-75 ms per 64-item write at
20,000 items for generative_agents).

A policy whose keys are each row's own (``row_keys``: fifo, lru, lfu, memorybank; a
window's oldest-first) needs no matrix pass per eviction either: the pool sorts the
candidates by those keys once (:meth:`CandidatePool.order_by`) and each eviction takes
the lowest, the sorted rows merged with a heap of the rows that joined since.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Iterable, Sequence
from operator import attrgetter

import numpy as np
from hivemem.memory_bus.features import COLUMN, NUM_FEATURES, candidate_features
from hivemem.memory_bus.item import Item

_RELEVANCE = COLUMN["relevance"]

_ID = attrgetter("id")

RowKeys = Callable[[np.ndarray], Sequence[np.ndarray]]
"""Eviction keys of feature rows, lowest first; a row's keys depend on that row alone."""


class PoolSlot:
    """Where one write keeps a namespace's pool between the flushes of its rows.

    A write decided row by row (a write policy that reads neighbours) stores each ADD
    before deciding the next row, one ``add_many`` each; the pool built at the first
    eviction then serves them all. The writer tells it of the other changes it makes
    meanwhile (an UPDATE: :meth:`CandidatePool.replace`; a DELETE: ``remove``).

    A pool pays for itself over several evictions. A namespace that the write brings one
    row (``rows=1``; the steady state of an agent writing a fact a tick into its own
    full memory) evicts for that row alone, from a matrix built for it as by definition
    (:meth:`Namespace.add_many`): for a namespace of 4 items, half the time of a pool.

    Args:
        keep: False makes a slot that keeps nothing, so that every ``add_many`` builds its
            own pool (what tests and benchmarks compare against).
        rows: How many rows the write has for the namespace, if known (None: several).
    """

    def __init__(self, keep: bool = True, rows: int | None = None) -> None:
        self.keep, self.rows = keep, rows
        self._pool: CandidatePool | None = None

    @property
    def pool(self) -> CandidatePool | None:
        """The pool kept from an earlier ``add_many`` of the write, if any."""
        return self._pool

    @pool.setter
    def pool(self, pool: CandidatePool) -> None:
        if self.keep:
            self._pool = pool


class CandidatePool:
    """Eviction candidates with their feature rows, ids and (if wanted) vectors.

    Args:
        items: The candidates (the namespace's items but the incoming one).
        now: Simulation time of the write.
        strength: MemoryBank strength per recall (the retention column).
        relevance: Whether the policy reads the relevance column (it then needs vectors).
        columns: The other features the policy reads (a policy's ``feature_columns``);
            the rest stay 0. None: every one.
    """

    def __init__(
        self,
        items: Iterable[Item],
        now: float,
        strength: float,
        relevance: bool,
        columns: Collection[str] | None = None,
    ) -> None:
        self.items = list(items)
        self.now, self.strength, self.relevance = now, strength, relevance
        self.columns = columns
        n = len(self.items)
        self._features = np.empty((max(n, 16), NUM_FEATURES), dtype=np.float64)
        self._features[:n] = self._rows(self.items)
        ids = list(map(_ID, self.items))  # map and zip below: loops in C, not Python
        self._ids = np.empty(len(self._features), dtype=np.int64)
        self._ids[:n] = ids
        self._vectors: np.ndarray | None = None
        if relevance and n:
            dim = len(self.items[0].vector)
            self._vectors = np.empty((len(self._features), dim), dtype=np.float32)
            self._vectors[:n] = [it.vector for it in self.items]
        self._row = dict(zip(ids, range(n), strict=True))
        self._contexts: np.ndarray | None = None  # the incoming vectors of one add_many
        self._relevance: np.ndarray | None = None  # (rows, contexts): candidate . context
        self._order: _Order | None = None  # the candidates sorted by row keys (order_by)
        self._arriving: dict[int, int] = {}  # id -> row of _arriving_rows, until it joins
        self._arriving_rows = np.empty((0, NUM_FEATURES))

    def expect(self, arriving: Sequence[Item]) -> None:
        """The items about to arrive, in order (``view(column=i)`` is the i-th).

        Their own feature rows, for when each joins the candidates (:meth:`add`), are
        one matrix; and every candidate's relevance to all of them is one matrix
        product, not a product per eviction.
        """
        self._arriving = {it.id: i for i, it in enumerate(arriving)}
        self._arriving_rows = self._rows(arriving)
        if not self.relevance or self._vectors is None:
            return
        n = len(self.items)
        self._contexts = np.ascontiguousarray(
            np.stack([it.vector for it in arriving]), dtype=np.float32
        )
        self._relevance = np.empty((len(self._features), len(arriving)), np.float32)
        self._relevance[:n] = self._vectors[:n] @ self._contexts.T

    def _rows(self, items: Sequence[Item]) -> np.ndarray:
        """The feature rows of ``items`` (relevance aside) at the write's time."""
        return candidate_features(items, self.now, None, self.strength, self.columns)

    def order_by(self, keys: RowKeys) -> None:
        """Keep the candidates in the order of ``keys`` (see :meth:`lowest`).

        Only for keys that read nothing but their own row (a policy's ``row_keys``): the
        order of the rows present now stays right whatever leaves or joins.
        """
        n = len(self.items)
        self._order = _Order(keys, keys(self._features[:n]), self._ids[:n])

    @property
    def ordered(self) -> bool:
        """Whether :meth:`order_by` was called (then :meth:`lowest` picks the victims)."""
        return self._order is not None

    def lowest(self) -> int:
        """The id of the candidate that :func:`lowest_first` would pick with the keys
        given to :meth:`order_by` (ties to the lower id), found without a pass over them."""
        if self._order is None:
            raise RuntimeError("lowest() needs order_by() first")
        return self._order.lowest(self._row)

    def __len__(self) -> int:
        return len(self.items)

    def view(
        self, context: np.ndarray | None, column: int | None = None
    ) -> tuple[list[Item], np.ndarray, np.ndarray]:
        """The candidates, their feature rows and their ids, aligned.

        Args:
            context: The incoming item's vector (the relevance column), or None.
            column: Its position among the vectors given to :meth:`expect`, if it was.
        """
        n = len(self.items)
        features = self._features[:n]
        if self.relevance:
            if context is None or self._vectors is None:
                features[:, _RELEVANCE] = 0.0
            elif column is not None and self._relevance is not None:
                features[:, _RELEVANCE] = self._relevance[:n, column]
            else:
                features[:, _RELEVANCE] = self._vectors[:n] @ context.astype(np.float32)
        return self.items, features, self._ids[:n]

    def add(self, item: Item) -> None:
        """Make ``item`` a candidate (for the evictions of the items written after it)."""
        n = len(self.items)
        if n == len(self._features):
            self._grow(2 * n)
        # An item that arrived in this write joins with the row computed for it then;
        # it is used once, so an update of it later in the write computes its row again.
        arrived = self._arriving.pop(item.id, None)
        if arrived is None:
            self._features[n] = self._rows([item])[0]
        else:
            self._features[n] = self._arriving_rows[arrived]
        self._ids[n] = item.id
        if self.relevance:
            if self._vectors is None:
                self._vectors = np.empty((len(self._features), len(item.vector)), np.float32)
            self._vectors[n] = item.vector
            if self._relevance is not None and self._contexts is not None:
                self._relevance[n] = self._contexts @ item.vector
        self._row[item.id] = n
        self.items.append(item)
        if self._order is not None:
            self._order.join(item.id, self._features[n : n + 1])

    def remove(self, item_id: int) -> None:
        """The item is gone: its row takes the last row (no-op for an unknown id)."""
        row = self._row.pop(item_id, None)
        if row is None:
            return
        if self._order is not None:
            self._order.leave(item_id)
        last = len(self.items) - 1
        moved = self.items.pop()
        if row != last:
            self.items[row] = moved
            self._features[row] = self._features[last]
            self._ids[row] = self._ids[last]
            if self._vectors is not None:
                self._vectors[row] = self._vectors[last]
            if self._relevance is not None:
                self._relevance[row] = self._relevance[last]
            self._row[moved.id] = row

    def replace(self, item: Item) -> None:
        """The candidate of ``item.id`` is now ``item`` (an update): its row is redone."""
        if item.id in self._row:
            self.remove(item.id)
            self.add(item)

    def _grow(self, rows: int) -> None:
        self._features = np.resize(self._features, (rows, NUM_FEATURES))
        self._ids = np.resize(self._ids, rows)
        if self._vectors is not None:
            self._vectors = np.resize(self._vectors, (rows, self._vectors.shape[1]))
        if self._relevance is not None:
            self._relevance = np.resize(self._relevance, (rows, self._relevance.shape[1]))


def _sort_key(values: Iterable[float], item_id: int) -> tuple[object, ...]:
    """A row's place in :func:`lowest_first`'s order: its keys, NaN after every number
    (as ``np.lexsort`` places it), then its id."""
    return (*((v != v, 0.0 if v != v else v) for v in values), item_id)


class _Order:
    """Candidates sorted by row keys: those present at the start in one sorted array,
    those that joined later in a heap; an entry whose candidate left (or left and joined
    again) is skipped when it comes up."""

    def __init__(self, keys: RowKeys, columns: Sequence[np.ndarray], ids: np.ndarray) -> None:
        order = np.lexsort((ids, *reversed(columns)))
        self.keys = keys
        self.columns = [np.asarray(c, dtype=np.float64)[order] for c in columns]
        self.ids = ids[order].tolist()
        self.cursor = 0  # the sorted entries before it are gone
        self.joined: list[tuple[tuple[object, ...], int, int]] = []  # (key, entry, id)
        self.entry: dict[int, int] = {}  # id -> its live heap entry, for ids that joined
        self.count = itertools.count()

    def join(self, item_id: int, row: np.ndarray) -> None:
        """A candidate arrives with its (1, NUM_FEATURES) feature row."""
        entry = next(self.count)
        self.entry[item_id] = entry
        key = _sort_key((float(c[0]) for c in self.keys(row)), item_id)
        heapq.heappush(self.joined, (key, entry, item_id))

    def leave(self, item_id: int) -> None:
        """A candidate is gone (its sorted entry is skipped once it has no live one)."""
        self.entry[item_id] = -1  # neither its sorted entry nor an old heap entry counts

    def lowest(self, present: dict[int, int]) -> int:
        """The lowest id of ``present`` (every candidate's id) in the order."""
        ids, entry = self.ids, self.entry
        while self.cursor < len(ids) and ids[self.cursor] in entry:
            self.cursor += 1  # left, or present through a later heap entry
        while self.joined and entry.get(self.joined[0][2]) != self.joined[0][1]:
            heapq.heappop(self.joined)
        if self.cursor == len(ids):
            best = self.joined[0][2]
        else:
            first = ids[self.cursor]
            if self.joined:
                key = _sort_key((float(c[self.cursor]) for c in self.columns), first)
                best = self.joined[0][2] if self.joined[0][0] < key else first
            else:
                best = first
        if best not in present:
            raise RuntimeError(f"candidate order lost track of id {best}")
        return best


def lowest_first(
    keys: Sequence[np.ndarray], candidates: Sequence[Item], n: int, ids: np.ndarray | None = None
) -> list[int]:
    """Positions of the ``n`` candidates with the smallest keys (first key most significant).

    Ties fall to the lower item id. ``ids``, the candidates' ids in order, saves a pass
    over the items. One victim (the usual case) is found in a few linear passes rather
    than a sort of every candidate.
    """
    if ids is None:
        ids = np.fromiter((it.id for it in candidates), np.int64, len(candidates))
    if n == 1 and len(ids):
        rows = np.arange(len(ids))
        for key in keys:
            values = key[rows]
            least = values.min()
            if least != least:  # NaN: let the sort below place it as lexsort does
                break
            rows = rows[values == least]
        else:
            return [int(rows[np.argmin(ids[rows])])]
    order = np.lexsort((ids, *reversed(keys)))
    return [int(i) for i in order[:n]]
