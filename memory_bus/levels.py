"""Which nodes of the graph tier a caller's role may see and touch, by level.

A role may be limited to some of the graph's levels (``AccessConfig.graph_levels``):
to it, the graph is the graph of those levels alone. :class:`LevelScope` answers, for
:class:`~hivemem.memory_bus.graph.GraphTier`, which levels are levels at all, which
items and node ids a caller may see, and which nodes a write may evict or merge into.
It is apart from the tier because every read, write and walk of the tier asks it the
same questions; the tier checks namespace access and ids, then asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hivemem.memory_bus.access import AccessPolicy
from hivemem.memory_bus.columns import column_of
from hivemem.memory_bus.config import GraphConfig
from hivemem.memory_bus.errors import InvalidInputError, ItemNotFoundError, WrongTypeError, in_row
from hivemem.memory_bus.interfaces import Caller, Hit
from hivemem.memory_bus.item import Item, TierName
from hivemem.memory_bus.namespace import Namespace


class LevelScope:
    """The levels of one graph tier, as each caller's role may see them.

    Args:
        config: The graph tier's config (its ``levels``).
        access: The store's access rules (which levels each role may touch).
    """

    def __init__(self, config: GraphConfig, access: AccessPolicy) -> None:
        self.config = config
        self.access = access
        # Every level of the graph: a role reads every level if its levels hold these
        # (a set compared, not counted: [0, 1, 5] on a 3-level graph is not every level).
        self._every = frozenset(range(len(config.levels)))
        self._on_levels: dict[frozenset[int], Callable[[Item], bool]] = {}  # (visible_to)
        self._at_level: dict[int, Callable[[Item], bool]] = {}  # (merge_scope)

    def check_levels(self, levels: Any, n: int) -> list[int]:
        """The ``n`` levels of a batch, each checked (None: all 0, events)."""
        if levels is None:
            return [0] * n
        checked = []
        for i, level in enumerate(column_of(levels, n, "level")):
            try:
                checked.append(self.check_level(level))
            except InvalidInputError as exc:
                raise in_row(exc, i) from None
        return checked

    def check_level(self, level: Any) -> int:
        """``level``, if it is one of the tier's levels."""
        top = len(self.config.levels)
        if isinstance(level, bool) or not isinstance(level, int):
            raise WrongTypeError("level", f"expected an int in 0..{top - 1}, got {level!r}")
        if not 0 <= level < top:
            raise InvalidInputError("level", f"expected an int in 0..{top - 1}, got {level!r}")
        return level

    def check_node(self, caller: Caller, namespace: str, item: Item, action: str) -> Item:
        """``item``, a node of ``namespace``, if ``caller`` may ``action`` it on its level.

        A node on a level the caller's role may not touch is, to that caller, no node:
        the same ``item_not_found`` as an id never given out, so that probing ids tells a
        role nothing of the levels hidden from it (an ``access_denied`` naming the level
        told it which ids were nodes there).
        """
        if item.level not in self.access.levels(caller):
            raise ItemNotFoundError(TierName.GRAPH.value, namespace, item.id)
        self.access.check(caller, TierName.GRAPH, namespace, action, item.level)
        return item

    def reads_every_level(self, caller: Caller) -> bool:
        """Whether ``caller``'s role may read every level of this tier's graphs."""
        return self._every <= self.access.levels(caller)

    def visible_to(self, caller: Caller) -> Callable[[Item], bool] | None:
        """A caller whose role is limited to some levels finds only those: a search ranks
        the nodes it may read (its top k is not cut before they are picked out), and
        recalls only them. None for a role that reads every level."""
        levels = self.access.levels(caller)
        if self._every <= levels:
            return None
        keep = self._on_levels.get(levels)
        if keep is None:
            keep = self._on_levels[levels] = lambda item: item.level in levels
        return keep

    def evict_scope(self, callers: Iterable[Caller]) -> Callable[[Item], bool] | None:
        """The nodes a write by ``callers`` may evict (see ``GraphTier.evict_scope``)."""
        limited = {
            self.access.levels(caller)
            for caller in set(callers)
            if not self.reads_every_level(caller)
        }
        if not limited:
            return None
        levels = frozenset.intersection(*limited)
        return lambda item: item.level in levels

    def merge_scope(self, proposal: Item) -> Callable[[Item], bool] | None:
        """The nodes ``proposal`` may merge into (see ``GraphTier.merge_scope``)."""
        keep = self._at_level.get(proposal.level)
        if keep is None:
            level = proposal.level
            keep = self._at_level[level] = lambda item: item.level == level
        return keep

    def shown(self, caller: Caller, ns: Namespace | None) -> Callable[[int], bool] | None:
        """Which node ids ``caller`` may see named (as an edge's end, a neighbour): those
        of live nodes on its levels. None for a role that reads every level, which also
        sees deleted nodes' ids (as with ``history``)."""
        levels = self.access.levels(caller)
        if self._every <= levels:
            return None
        if ns is None:
            return lambda node: False

        def shown(node: int) -> bool:
            item = ns.item(node)
            return item is not None and item.level in levels

        return shown

    def listed(
        self, caller: Caller, valid: Callable[[Item], bool] | None
    ) -> Callable[[Item], bool] | None:
        """The items ``caller`` may list: those ``valid`` keeps (None: any), on its levels."""
        levels = self.access.levels(caller)
        if self._every <= levels:
            return valid
        if valid is None:
            return lambda item: item.level in levels
        return lambda item: item.level in levels and valid(item)

    def readable(self, caller: Caller, hits: list[Hit]) -> list[Hit]:
        """The ``hits`` on levels the caller's role may read."""
        levels = self.access.levels(caller)
        if self._every <= levels:
            return hits  # the common case: every level
        return [h for h in hits if h.item.level in levels]

    def nodes_by_level(
        self,
        namespaces: Iterable[Namespace],
        caller: Caller | None,
        keep: Callable[[Item], bool] | None,
    ) -> dict[str, int]:
        """How many nodes of ``namespaces`` (those ``keep`` keeps) stand on each level,
        by the level's name; with ``caller``, on the levels its role may read alone."""
        levels = [
            it.level for ns in namespaces for it in ns.items.values() if keep is None or keep(it)
        ]
        return {
            name: levels.count(i)
            for i, name in enumerate(self.config.levels)
            if caller is None or i in self.access.levels(caller)
        }
