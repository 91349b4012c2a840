"""What the tiers of one store share: ids, embedder, access rules, limits, listeners."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hivemem.memory_bus.access import AccessPolicy
from hivemem.memory_bus.interfaces import Embedder, MemoryEvent
from hivemem.memory_bus.item import Limits

if TYPE_CHECKING:
    from hivemem.memory_bus.namespace import NextUse
    from hivemem.memory_bus.proposals import DecisionTape

Defer = Callable[[Callable[[], None]], None]
"""Takes a change whose outcome is already decided, to run it later (see ``write_batch``)."""


@dataclass
class StoreContext:
    """What every tier of one store shares: ids, embedder, access rules, limits, listeners."""

    dim: int
    seed: int
    access: AccessPolicy
    embedder: Embedder | None
    limits: Limits = field(default_factory=Limits)
    next_id: int = 1
    id_stride: int = 1
    """Step between ids: shard ``i`` of ``n`` starts at ``1 + i`` and steps by ``n``, so
    ids stay unique across the shards of a bus."""
    shard: tuple[int, int] = (0, 1)
    """(index, count) of this store among a bus's shards: a shard makes or reads only the
    namespaces it owns (:func:`~hivemem.memory_bus.placement.check_placement`)."""
    next_use: NextUse | None = None
    listeners: list[Callable[[MemoryEvent], None]] = field(default_factory=list)
    tape: DecisionTape | None = None
    """Where the write policy's decisions are recorded or played back, during a request
    the bus journals or replays (see :class:`~hivemem.memory_bus.proposals.DecisionTape`)."""
    changes: int = field(default=0, init=False)
    """Events emitted so far: a request that raises after this moved was refused after
    it changed the store (the bus keeps its journal record)."""
    _following: deque[MemoryEvent] | None = field(default=None, init=False, repr=False)

    def allocate(self, n: int) -> range:
        """``n`` fresh int64 ids, in order."""
        start = self.next_id
        self.next_id += n * self.id_stride
        return range(start, self.next_id, self.id_stride)

    def emit(self, event: MemoryEvent) -> None:
        """Announce a change to every listener.

        An event a listener emits in turn (the graph ends a removed node's edges) follows
        once every listener has had this one, so that every listener gets the events of a
        namespace in the order of their numbers.
        """
        self.changes += 1
        if self._following is not None:
            self._following.append(event)
            return
        self._following = following = deque([event])
        try:
            while following:
                event = following.popleft()
                for listener in self.listeners:
                    listener(event)
        finally:
            self._following = None
