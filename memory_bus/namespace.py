"""One namespace: its items, vector index, capacity, eviction and history.

A namespace never checks access or validates input: its tier did both before calling.
It does keep its invariants: at most ``capacity`` items, at most ``token_budget``
tokens, and an index holding exactly its items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from hivemem.memory_bus.batch import NewRows
from hivemem.memory_bus.candidates import PoolSlot
from hivemem.memory_bus.config import NamespaceMode, TierConfig
from hivemem.memory_bus.exact_search import pair_scores
from hivemem.memory_bus.generators import generator_from_state, generator_state
from hivemem.memory_bus.index import VectorIndex
from hivemem.memory_bus.interfaces import EvictionPolicy, Hit, MemoryEvent
from hivemem.memory_bus.item import Item, TierName, version_record
from hivemem.memory_bus.pending import PendingBatches
from hivemem.memory_bus.victims import candidate_pool, evict_alone, make_room

NextUse = Callable[[Item, float], float]
"""Simulation oracle: ``next_use(item, now)`` is the time of the item's next use, inf if never."""


def _passing(
    as_of: float | None, keep: Callable[[Item], bool] | None
) -> Callable[[Item], bool] | None:
    """What a search keeps: items valid at ``as_of`` that ``keep`` keeps (None: every item)."""
    if as_of is None:
        return keep
    if keep is None:
        return lambda item: item.valid_at(as_of)
    return lambda item: item.valid_at(as_of) and keep(item)


def _any_item() -> Callable[[Item], bool] | None:
    return None


class Namespace:
    """Items of one agent, group or graph, with their index and bounds."""

    def __init__(
        self,
        tier: TierName,
        name: str,
        config: TierConfig,
        dim: int,
        eviction: EvictionPolicy,
        rng: np.random.Generator,
    ) -> None:
        self.tier = tier
        self._tier = tier.value  # events carry the plain string; an enum's .value is slow
        self.name = name
        self.config = config
        self.eviction = eviction
        self.rng = rng
        self._items: dict[int, Item] = {}
        self._pending = PendingBatches(self._build)  # stored as columns, built when read
        self.index = VectorIndex(dim, config.index, seed=int(rng.integers(1 << 31)))
        self.history: dict[int, list[dict[str, Any]]] = {}
        self._tokens = 0
        self.nbytes = 0
        self.evictions = 0
        self._taken_versions: dict[int, int] = {}  # evicted, until _drop announces them
        self.event_seq = 0  # item events announced so far (MemoryEvent.seq)
        self._ordered: tuple[int, np.ndarray] | None = None  # (event_seq, ids ascending)
        # Which items the write under way may evict (None: any), asked at each eviction:
        # the graph tier's levels a writer may touch (its tier sets this).
        self.eviction_scope: Callable[[], Callable[[Item], bool] | None] = _any_item

    def __len__(self) -> int:
        return len(self._items) + len(self._pending)

    @property
    def items(self) -> dict[int, Item]:
        """Every item by id, in write order.

        Rows stored by :meth:`append` become :class:`Item` objects here, on the first
        access after they were written: a batch costs a few list and numpy operations
        to write, and the objects are built once something reads the namespace
        (:mod:`hivemem.memory_bus.pending`). :meth:`item` reads one without building
        the others.
        """
        self._materialize()
        return self._items

    def ids_in_order(self) -> np.ndarray:
        """Every item's id, ascending, pending ones unbuilt (a listing pages through it,
        so it is kept until the namespace next announces an event: every change of its
        ids does)."""
        if self._ordered is None or self._ordered[0] != self.event_seq:
            built = np.fromiter(self._items, dtype=np.int64, count=len(self._items))
            self._ordered = (self.event_seq, np.sort(np.concatenate([built, self._pending.ids()])))
        return self._ordered[1]

    def item(self, item_id: int) -> Item | None:
        """The item ``item_id``, or None: ``self.items.get(item_id)`` without building
        every pending item.

        A search reads its hits by id, as do ``get``, ``delete`` and ``update``: only the
        batch that holds ``item_id`` is built (:class:`PendingBatches`).
        """
        found = self._items.get(item_id)
        if found is not None or not self._pending.batches:
            return found
        return self._pending.item(item_id)

    def _materialize(self) -> None:
        if self._pending.batches:
            self._tokens += self._pending.build_all(self._items)

    def _build(self, rows: NewRows) -> list[Item]:
        return rows.build(self.tier, self.index.vectors_of(rows.ids))

    @property
    def tokens(self) -> int:
        """Whitespace tokens of every item's text."""
        return self._tokens + self._pending.tokens

    # --- bounds -----------------------------------------------------------------------

    def fits(self, item: Item) -> bool:
        """Whether ``item`` alone fits the namespace's token budget."""
        budget = self.config.token_budget
        return (
            self.config.mode is not NamespaceMode.TOKEN_BUDGET
            or budget is None
            or item.tokens <= budget
        )

    def _over(self, extra_tokens: int) -> bool:
        cap = self.config.capacity
        if cap is not None and len(self) > cap:
            return True
        budget = self.config.token_budget
        return (
            self.config.mode is NamespaceMode.TOKEN_BUDGET
            and budget is not None
            and self.tokens + extra_tokens > budget
        )

    # --- mutation ---------------------------------------------------------------------

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more items fit without evicting (token budgets: never assumed)."""
        cap = self.config.capacity
        return self.config.mode is not NamespaceMode.TOKEN_BUDGET and (
            cap is None or len(self) + n <= cap
        )

    def append(self, rows: NewRows, emit: Callable[[MemoryEvent], None]) -> None:
        """Store a batch of new items that fit (:meth:`has_room`), as columns.

        The ids are fresh and the columns checked by the tier; the vectors go into the
        index at once, the items are built on first read (:attr:`items`).
        """
        ids, texts, vectors = rows.ids, rows.batch.texts, rows.vectors()
        self._pending.add(rows)
        self.nbytes += len("".join(texts).encode()) + vectors.nbytes
        if len(ids) == 1:
            self.index.add_one_checked(int(ids[0]), vectors[0])
        else:
            self.index.add_checked(np.asarray(ids, dtype=np.int64), vectors)
        # The index holds a copy; the items take theirs from it when built. Keeping the
        # batch's own matrix would hold the request's buffer, and on a virtual machine
        # every fresh page costs a fault (a second copy per item halved the write rate).
        rows.batch.vectors = None
        self.announce(emit, "add", ids, 1, rows.now)

    def add_many(
        self,
        items: Sequence[Item],
        now: float,
        next_use: NextUse | None,
        emit: Callable[[MemoryEvent], None],
        slot: PoolSlot | None = None,
    ) -> list[list[int]]:
        """Add ``items`` in order, evicting as needed; one index update for the batch.

        Args:
            slot: Keeps the eviction candidates for the next ``add_many`` of the same
                write (see :class:`PoolSlot`); None: for this call only.

        Returns:
            For each item, the ids evicted to make room for it.
        """
        self._materialize()
        pending: dict[int, Item] = {}
        removed: list[int] = []
        evicted_per_item: list[list[int]] = []
        # the pool is built at the first eviction this write makes, unless it brings one row
        slot = slot or PoolSlot(rows=len(items))
        expected = False  # whether the pool knows this call's incoming items (pool.expect)
        for column, item in enumerate(items):
            self._items[item.id] = item
            self._tokens += item.tokens
            self.nbytes += item.nbytes
            pending[item.id] = item
            self.announce(emit, "add", (item.id,), item.version, now)
            pool = slot.pool
            victims: list[int] = []
            if pool is None and self._over(0):
                if slot.rows == 1:  # the write's one row here: a pool would serve one eviction
                    victims = evict_alone(self, item, now, next_use)
                else:
                    pool = slot.pool = candidate_pool(self, item, now)
            if pool is not None:
                if not expected:
                    pool.expect(items)
                    expected = True
                victims = make_room(self, item, now, next_use, pool, column)
            for victim in victims:
                self._drop(victim, kind="evict", now=now, emit=emit)
                if pending.pop(victim, None) is None:
                    removed.append(victim)
            evicted_per_item.append(victims)
        if removed:
            self.index.remove_ids(removed)
        # fresh ids and vectors the tier checked: no need to check them again
        if len(pending) == 1:
            for item_id, item in pending.items():
                self.index.add_one_checked(item_id, item.vector)
        elif pending:
            ids = np.fromiter(pending, dtype=np.int64, count=len(pending))
            self.index.add_checked(ids, np.stack([it.vector for it in pending.values()]))
        return evicted_per_item

    def _take_out(self, victim: Item) -> None:
        """Take an evicted item out of the items and the counts (``_drop`` does the rest,
        announcing the version it had)."""
        del self._items[victim.id]
        self._tokens -= victim.tokens
        self.nbytes -= victim.nbytes
        self._taken_versions[victim.id] = victim.version

    def _drop(
        self, item_id: int, kind: str, now: float, emit: Callable[[MemoryEvent], None]
    ) -> None:
        """Bookkeeping of an item already taken out of ``items``."""
        if kind == "evict":
            self.evictions += 1
            self.history.pop(item_id, None)
        self.announce(emit, kind, (item_id,), self._taken_versions.pop(item_id, 0), now)

    def remove(self, item_id: int, now: float, emit: Callable[[MemoryEvent], None]) -> Item:
        """Delete one item (history keeps a deletion marker).

        An item still pending (:meth:`append`) is taken out of its batch, built alone
        (:meth:`item`), so the other pending items stay unbuilt.

        Raises:
            KeyError: no such item.
        """
        item = self._items.pop(item_id, None)
        if item is None:
            taken = self._pending.take(item_id)
            if taken is None:
                raise KeyError(item_id)
            item, let_go = taken
            self._tokens += let_go
        self._tokens -= item.tokens
        self.nbytes -= item.nbytes
        self.index.remove(np.asarray([item_id], dtype=np.int64))
        self._remember(item, op="delete", at=now)
        self.announce(emit, "delete", (item_id,), item.version, now)
        return item

    def replace(
        self,
        old: Item,
        new: Item,
        now: float,
        emit: Callable[[MemoryEvent], None],
        next_use: NextUse | None = None,
    ) -> list[int]:
        """Swap in a new version of an item, keeping the old one in its history; the ids
        of the items evicted to make room for it.

        ``old`` is the current version (from :meth:`item`); a pending one is replaced
        where it was read, so the other pending items stay unbuilt. In a
        ``token_budget`` namespace a version with more tokens may take it over its
        budget: other items are then evicted, chosen by the eviction policy as for a
        write (``new`` itself never is, and must fit alone: :meth:`fits`).
        """
        self._remember(old, op="update", at=now)
        if old.id in self._items:
            self._items[new.id] = new  # built already: the pending batches stay as they are
        elif not self._pending.replace(old, new):
            self.items[new.id] = new
        self._tokens += new.tokens - old.tokens
        self.nbytes += new.nbytes - old.nbytes
        if not _same_vector(old.vector, new.vector):
            ids = np.asarray([new.id], dtype=np.int64)
            self.index.remove(ids)
            self.index.add_checked(ids, new.vector[None, :])
        self.announce(emit, "update", (new.id,), new.version, now)
        if not self._over(0):
            return []
        self._materialize()
        victims = evict_alone(self, new, now, next_use)
        for victim in victims:
            self._drop(victim, kind="evict", now=now, emit=emit)
        if victims:
            self.index.remove_ids(victims)
        return victims

    def announce(
        self,
        emit: Callable[[MemoryEvent], None],
        kind: str,
        ids: Sequence[int],
        version: int,
        now: float,
        edge: Mapping[str, Any] | None = None,
    ) -> None:
        """Emit the event of ``ids``, numbered on from the namespace's last one (see
        :class:`MemoryEvent`; ``edge`` for an edge event)."""
        seq = self.event_seq + 1
        self.event_seq += len(ids)
        emit(MemoryEvent(kind, self._tier, self.name, ids, version, now, seq, edge))

    def _remember(self, item: Item, op: str, at: float) -> None:
        entries = self.history.setdefault(item.id, [])
        entries.append({**version_record(item), "superseded_at": at, "superseded_by": op})
        del entries[: max(0, len(entries) - self.config.history_limit)]

    # --- reads ------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        as_of: float | None,
        keep: Callable[[Item], bool] | None = None,
    ) -> list[list[Hit]]:
        """Nearest items for each query row, best first (no recall bookkeeping): the
        ``k`` best of those valid at ``as_of`` (None: every item) that ``keep`` keeps
        (None: all). Filtered, it fetches more than ``k`` from the index, and where too
        few of those pass, it ranks every item that passes exactly."""
        if not len(self):
            return [[] for _ in range(len(queries))]
        ok = _passing(as_of, keep)
        fetch = min(len(self), k if ok is None else max(4 * k, k + 16))
        if ok is None and len(queries) == 1:
            ranked = self.index.top_tiny(queries, fetch)
            if ranked is not None:
                found = [(i, s, self.item(i)) for s, i in ranked]
                return [[Hit(i, s, it) for i, s, it in found if it is not None][:k]]
        scores, ids = self.index.search(queries, fetch)
        out = [self._hits(srow, irow, k, ok) for srow, irow in zip(scores, ids, strict=True)]
        if ok is not None and fetch < len(self):
            out = [
                hits if len(hits) == k else self._exact(q, k, ok)
                for q, hits in zip(queries, out, strict=True)
            ]
        return out

    def _hits(
        self, scores: np.ndarray, ids: np.ndarray, k: int, ok: Callable[[Item], bool] | None
    ) -> list[Hit]:
        lookup = self.item
        if ok is None:
            found = [(i, s, lookup(i)) for s, i in zip(scores.tolist(), ids.tolist(), strict=True)]
            return [Hit(i, s, it) for i, s, it in found if it is not None][:k]
        hits: list[Hit] = []
        for score, item_id in zip(scores.tolist(), ids.tolist(), strict=True):
            item = lookup(item_id)
            if item is None or not ok(item):
                continue
            hits.append(Hit(item_id, score, item))
            if len(hits) == k:
                break
        return hits

    def _exact(self, query: np.ndarray, k: int, ok: Callable[[Item], bool]) -> list[Hit]:
        valid = [it for it in self.items.values() if ok(it)]
        if not valid:
            return []
        vectors = np.stack([it.vector for it in valid])
        scores = pair_scores(query, vectors)  # as the index scores them
        order = np.lexsort((np.fromiter((it.id for it in valid), np.int64, len(valid)), -scores))[
            :k
        ]
        return [Hit(valid[i].id, float(scores[i]), valid[i]) for i in order]

    def history_of(self, item_id: int) -> list[dict[str, Any]]:
        """Past versions (oldest first) then the current one, if the item still exists."""
        past = list(self.history.get(item_id, []))
        current = self.item(item_id)
        if current is not None:
            past.append({**version_record(current), "superseded_at": None, "superseded_by": None})
        return past

    # --- state ------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A msgpack-safe snapshot.

        Rows stored as columns and never read stay columns (:meth:`PendingBatches.to_state`):
        their vectors are in the index's state once, not in each item's too, and a
        restored namespace does not build them all. Built into items, the snapshot of a
        192,000-item store was twice the size (316 MB against 152), and its recovery took
        1.9 s against 0.84 (``benchmarks/recovery.py``).
        """
        return {
            "items": [it.to_state() for it in self._items.values()],
            "pending": self._pending.to_state(),
            "tokens": self._tokens,
            "nbytes": self.nbytes,
            "history": [[item_id, entries] for item_id, entries in self.history.items()],
            "evictions": self.evictions,
            "event_seq": self.event_seq,
            "rng": generator_state(self.rng),
            "index": self.index.to_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state`."""
        self._items, self._pending = {}, PendingBatches(self._build)
        self._ordered = None
        for raw in state["items"]:
            item = Item.from_state(raw)
            self._items[item.id] = item
        pending = state.get("pending")
        if pending is None:  # a snapshot of version 1: every item built
            self._tokens = sum(it.tokens for it in self._items.values())
            self.nbytes = sum(it.nbytes for it in self._items.values())
        else:
            self._pending.load(pending, self.name)
            self._tokens, self.nbytes = int(state["tokens"]), int(state["nbytes"])
        self.history = {int(item_id): list(entries) for item_id, entries in state["history"]}
        self.evictions = int(state["evictions"])
        # before events were numbered: they start again at 1 (subscribers see a restart)
        self.event_seq = int(state.get("event_seq", 0))
        self.rng.bit_generator.state = generator_from_state(state["rng"])
        self.index = VectorIndex.from_state(state["index"], self.config.index)


def _same_vector(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` for two checked vectors, with equal bytes as the quick yes."""
    return a.tobytes() == b.tobytes() or bool(np.array_equal(a, b))
