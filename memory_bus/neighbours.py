"""The neighbours a write policy sees, for the proposals of one batch, searched together.

A write policy (Memory-R1's ADD / UPDATE / DELETE / NOOP) decides each proposal from its
nearest items as the namespace holds them at that moment, the batch's earlier decisions
included. Searched row by row, that is one pass over every vector of an exact index per
proposal: a 64-proposal ``dedup`` batch into a namespace of 20,000 items took ~150 ms.
:class:`BatchNeighbours` searches the batch's proposals once, together (one matrix
product), against the namespace as the batch found it, fetching ``k`` plus one per
proposal. Each row's list then leaves out the items changed since (updated, deleted,
evicted: :meth:`changed`) and takes in the items the batch brought (added, or updated to
a new vector: :meth:`added`, :meth:`changed`), each scored against that row alone; the
best ``k`` by (score, then the lower id), as a search would rank them. Where more items
changed than the extra fetched covers, :meth:`hits` says so (None) and the caller
searches that row afresh.
"""

from __future__ import annotations

import numpy as np
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.namespace import Namespace


class BatchNeighbours:
    """Neighbour lists of the proposals of one batch to one namespace.

    Args:
        ns: The namespace, as the batch found it.
        vectors: The proposals' vectors, (m, dim), in batch order.
        k: Neighbours per proposal.
        positions: The proposals' positions in the batch (what :meth:`hits` is asked by).
    """

    def __init__(self, ns: Namespace, vectors: np.ndarray, k: int, positions: list[int]) -> None:
        self.k = k
        self._row = {pos: row for row, pos in enumerate(positions)}
        size = len(ns.index)
        fetch = min(size, k + len(vectors))
        self._complete = fetch == size  # every item is in every row's list
        self._scores, self._ids = ns.index.search(vectors, max(fetch, 1))
        self._stale: set[int] = set()
        self._fresh: dict[int, np.ndarray] = {}

    def added(self, item_id: int, vector: np.ndarray) -> None:
        """An item the batch added (with its vector)."""
        self._fresh[item_id] = vector

    def changed(self, item_id: int, vector: np.ndarray | None = None) -> None:
        """An item updated to ``vector``, or removed (None: deleted or evicted)."""
        self._stale.add(item_id)
        if vector is None:
            self._fresh.pop(item_id, None)
        else:
            self._fresh[item_id] = vector

    def hits(self, pos: int, vector: np.ndarray, ns: Namespace) -> list[Hit] | None:
        """The ``k`` nearest items of the proposal at batch position ``pos`` now, best
        first; None if the rows fetched ahead cannot tell (search that row afresh)."""
        row, stale = self._row[pos], self._stale
        found = [
            (score, item_id)
            for score, item_id in zip(
                self._scores[row].tolist(), self._ids[row].tolist(), strict=True
            )
            if item_id >= 0 and item_id not in stale
        ]
        if len(found) < self.k and not self._complete:
            return None
        if self._fresh:
            ids = list(self._fresh)
            scores = (np.stack([self._fresh[i] for i in ids]) @ vector).tolist()
            found += zip(scores, ids, strict=True)
        found.sort(key=lambda pair: (-pair[0], pair[1]))
        best = [(i, score, ns.item(i)) for score, i in found[: self.k]]
        hits = [Hit(i, score, it) for i, score, it in best if it is not None]
        return hits if len(hits) == min(self.k, len(found)) else None  # a removal unannounced
