"""The batches a namespace stores as columns, until they are built into items.

A batch that the write policy adds whole (``always_add``) into a namespace with room goes
in as columns (:meth:`~hivemem.memory_bus.namespace.Namespace.append`): its vectors into
the index at once, its other columns kept here as the tier checked them. Turning rows
into :class:`~hivemem.memory_bus.item.Item` objects costs about 5 us a row on the bus's
owner thread, so it waits for a read, and a read by id builds only the batch (one
``write_many``) that holds the item: a search of ten hits, a ``get``, a delete or an
update of one item in a namespace written in bulk once built every pending item (half a
second at 100,000). What needs every item builds the rest (:meth:`PendingBatches.build_all`),
keeping the objects already built, so each item is built once and the recalls it took
(hits, accessed) carry over.

A batch whose every row was deleted is let go (:meth:`PendingBatches.take`): a namespace
kept small by deletes and read by id alone (a search's hits, ``get``) never builds all,
and held every batch it was ever written, deleted rows and all (4,000 batches and no
item after 4,000 rounds of a write and its deletes; ``benchmarks/soak.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import numpy as np
from hivemem.memory_bus.batch import NewRows
from hivemem.memory_bus.item import Item

_NO_IDS = np.empty(0, dtype=np.int64)


class PendingBatches:
    """Batches of new rows not yet built into items, in write order.

    Args:
        build: The items of a batch (their vectors read back from the index).
    """

    def __init__(self, build: Callable[[NewRows], list[Item]]) -> None:
        self._build = build
        self.batches: list[NewRows] = []
        self._built: dict[int, list[Item]] = {}  # batches built for a read, by position
        self._left: dict[int, int] = {}  # of each built batch, its items not deleted
        self._emptied = 0  # built batches with no item left (let go by _compact)
        self.read: dict[int, Item] = {}
        """The items of the built batches, by id: a deleted one gone, an updated one new."""
        self._n = 0
        self._tokens = 0  # tokens of the first _counted batches
        self._counted = 0

    def __len__(self) -> int:
        """Rows pending (less the ones deleted since)."""
        return self._n

    def add(self, rows: NewRows) -> None:
        """Keep a batch (ids larger than any kept before)."""
        self.batches.append(rows)
        self._n += len(rows.ids)

    @property
    def tokens(self) -> int:
        """Whitespace tokens of every batch's texts (deleted rows included: the namespace
        counts those off its own total when it deletes them).

        Only the batches added since the last call are counted: the metrics ask every
        second, and a namespace written and never read keeps every batch pending.
        """
        if self._counted < len(self.batches):
            self._tokens += sum(rows.tokens() for rows in self.batches[self._counted :])
            self._counted = len(self.batches)
        return self._tokens

    def item(self, item_id: int) -> Item | None:
        """The pending item ``item_id`` (its batch built now if it was not), or None."""
        found = self.read.get(item_id)
        if found is not None or not self.batches:
            return found
        pos = self._position(item_id)
        if pos < 0 or pos in self._built or item_id not in self.batches[pos].ids:
            return None  # a range of ids: no search
        built = self._built[pos] = self._build(self.batches[pos])
        self._left[pos] = len(built)
        self.read.update((it.id, it) for it in built)
        return self.read[item_id]

    def _position(self, item_id: int) -> int:
        """The position of the batch that holds ``item_id`` if any does (-1: none could)."""
        return bisect.bisect_right(self.batches, item_id, key=_first_id) - 1

    def ids(self) -> np.ndarray:
        """The ids of every pending item, in write order (a deleted one left out)."""
        parts = [
            rows.ids
            if pos not in self._built
            else np.asarray([it.id for it in self._built[pos] if it.id in self.read], np.int64)
            for pos, rows in enumerate(self.batches)
        ]
        return np.concatenate(parts).astype(np.int64, copy=False) if parts else _NO_IDS

    def take(self, item_id: int) -> tuple[Item, int] | None:
        """Take the pending item ``item_id`` out (it is deleted), or None if none.

        Returns:
            The item, and the tokens of the batches let go meanwhile, which :attr:`tokens`
            no longer counts (their rows all deleted: the namespace had counted each off
            its own total, and counts them back).

        A batch left with no item is let go once such batches are more than half of all:
        so they stay fewer than the batches that hold items, and the deletes that emptied
        them share the cost of the pass (letting each go at once took a pass over the
        later batches at each delete: 100,000 one-row writes made 100,000 batches).
        """
        if self.item(item_id) is None:
            return None
        self._n -= 1
        item = self.read.pop(item_id)
        pos = self._position(item_id)
        self._left[pos] -= 1
        if self._left[pos]:
            return item, 0
        self._built[pos] = []  # the objects go now, the columns with the batch
        self._emptied += 1
        return item, self._compact() if 2 * self._emptied > len(self.batches) else 0

    def _compact(self) -> int:
        """Let go of the batches with no item left; the tokens of their texts."""
        counted = self.tokens  # every batch's, so that those let go can be taken off
        kept: list[NewRows] = []
        built: dict[int, list[Item]] = {}
        left: dict[int, int] = {}
        for pos, rows in enumerate(self.batches):
            if self._left.get(pos) == 0:
                continue
            if pos in self._built:
                built[len(kept)], left[len(kept)] = self._built[pos], self._left[pos]
            kept.append(rows)
        self.batches, self._built, self._left, self._emptied = kept, built, left, 0
        self._counted = len(kept)
        self._tokens = sum(rows.tokens() for rows in kept)
        return counted - self._tokens

    def replace(self, old: Item, new: Item) -> bool:
        """Put ``new`` where the pending ``old`` was read; False if ``old`` is not that."""
        if self.read.get(old.id) is not old:
            return False
        self.read[new.id] = new
        return True

    def build_all(self, into: dict[int, Item]) -> int:
        """Build every batch into ``into``, in write order, and forget them all; the
        tokens of every batch (as :attr:`tokens`)."""
        tokens = 0
        built, read = self._built, self.read
        for pos, rows in enumerate(self.batches):
            tokens += rows.tokens()
            items = built.get(pos)
            if items is None:
                into.update((it.id, it) for it in self._build(rows))
            else:  # read by id: a deleted item is gone from read, an updated one new
                into.update((it.id, read[it.id]) for it in items if it.id in read)
        self.batches, self._built, self.read, self._n = [], {}, {}, 0
        self._left, self._emptied = {}, 0
        self._tokens = self._counted = 0
        return tokens

    def to_state(self) -> list[dict[str, Any]]:
        """Every batch as columns (:meth:`NewRows.to_state`), in write order; one built
        for a read also carries its items as they are now (a deleted one gone, an updated
        one new), which a restored namespace keeps as read."""
        state = []
        for pos, rows in enumerate(self.batches):
            batch = rows.to_state()
            built = self._built.get(pos)
            if built is not None:
                batch["read"] = [self.read[it.id].to_state() for it in built if it.id in self.read]
            state.append(batch)
        return state

    def load(self, state: list[dict[str, Any]], namespace: str) -> None:
        """Add the batches of :meth:`to_state` (of ``namespace``) after any held."""
        for raw in state:
            rows = NewRows.from_state(raw, namespace)
            self.add(rows)
            read = raw.get("read")
            if read is not None:
                items = [Item.from_state(item) for item in read]
                self._built[len(self.batches) - 1] = items
                self._left[len(self.batches) - 1] = len(items)
                if not items:  # a batch a bus from before _compact kept
                    self._emptied += 1
                self.read.update((it.id, it) for it in items)
                self._n -= len(rows.ids) - len(items)


def _first_id(rows: NewRows) -> int:
    return int(rows.ids[0])
