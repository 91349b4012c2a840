"""The in-process memory store: three tiers sharing ids, an embedder and access rules.

Example:
    >>> from hivemem.memory_bus.store import MemoryStore
    >>> from hivemem.memory_bus.config import StoreConfig
    >>> from hivemem.memory_bus.interfaces import Caller
    >>> from hivemem.memory_bus.item import NewItem
    >>> store = MemoryStore(StoreConfig(dim=64))
    >>> alice = Caller("alice", frozenset({"team"}))
    >>> store.shared.write(alice, "team", NewItem("the vault code is 4417"), now=0.0).op
    <WriteOp.ADD: 'ADD'>
    >>> q = store.embed(["vault code"])[0]
    >>> store.shared.search(alice, "team", q, k=1, now=1.0)[0].item.text
    'the vault code is 4417'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hivemem.memory_bus.access import AccessPolicy
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.embedder import make_embedder
from hivemem.memory_bus.errors import ConfigError, InvalidInputError
from hivemem.memory_bus.graph import GraphTier
from hivemem.memory_bus.interfaces import Caller, Embedder, MemoryEvent
from hivemem.memory_bus.item import Limits, TierName
from hivemem.memory_bus.namespace import NextUse
from hivemem.memory_bus.store_context import StoreContext
from hivemem.memory_bus.tiers import VectorTier

STATE_VERSION = 2
"""The snapshot format written; 2 keeps rows never read as columns (1 built every item)."""
READABLE_VERSIONS = frozenset({1, 2})


class MemoryStore:
    """Private, shared and graph tiers over one id space.

    Args:
        config: The store's configuration (dimension, tiers, access).
        embedder: Turns texts into vectors for items written without one; by default
            the one ``config.embedder`` names. ``embed=False`` requires vectors on every
            write instead.
        limits: Bounds on item sizes and batch lengths.
        embed: Whether the store embeds texts at all.
    """

    def __init__(
        self,
        config: StoreConfig | None = None,
        embedder: Embedder | None = None,
        limits: Limits | None = None,
        embed: bool = True,
    ) -> None:
        self.config = config or StoreConfig()
        # (index, count) in a sharded bus (:meth:`as_shard`); a data dir keeps it
        self.shard = (0, 1)
        # How the store embeds, for clients to embed alike (``ping``): None where it
        # embeds with an object it was given (which its configuration does not describe),
        # or not at all.
        self.embedder_settings: dict[str, Any] | None = None
        if embed and embedder is None:
            embedder = make_embedder(self.config.embedder, self.config.dim)
            self.embedder_settings = self.config.embedder.model_dump(mode="json")
        if embedder is not None and embedder.dim != self.config.dim:
            raise ConfigError(f"embedder dim {embedder.dim} != store dim {self.config.dim}")
        self.ctx = StoreContext(
            dim=self.config.dim,
            seed=self.config.seed,
            access=AccessPolicy(self.config.access),
            embedder=embedder if embed else None,
            limits=limits or Limits(),
        )
        self.private = VectorTier(TierName.PRIVATE, self.config.private, self.ctx)
        self.shared = VectorTier(TierName.SHARED, self.config.shared, self.ctx)
        self.graph = GraphTier(self.config.graph, self.ctx)

    @property
    def tiers(self) -> dict[TierName, VectorTier]:
        """The tiers by name."""
        return {
            TierName.PRIVATE: self.private,
            TierName.SHARED: self.shared,
            TierName.GRAPH: self.graph,
        }

    def tier(self, name: str | TierName) -> VectorTier:
        """A tier by name ("private", "shared", "graph"), with "did you mean" on a typo."""
        return self.tiers[TierName.parse(name)]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the store's embedder."""
        if self.ctx.embedder is None:
            raise InvalidInputError("texts", "this store has no embedder")
        return self.ctx.embedder(texts)

    def subscribe(self, listener: Callable[[MemoryEvent], None]) -> None:
        """Call ``listener`` for every add, update, delete and eviction."""
        self.ctx.listeners.append(listener)

    def set_oracle(self, next_use: NextUse | None) -> None:
        """Give eviction the future (Belady): ``next_use(item)`` is its next use time."""
        self.ctx.next_use = next_use

    def as_shard(self, index: int, count: int) -> MemoryStore:
        """Make this (empty) store shard ``index`` of ``count``: its ids are ``1 + index``,
        ``1 + index + count``, ... so no two shards of a bus hand out the same id.

        A bus's data directory keeps the place (``shard.json``), and a restart in another
        is refused: its journal, replayed with the other spacing, would give other ids
        than its clients were told (:func:`~hivemem.memory_bus.data_files.check_shard`).

        Raises:
            ConfigError: the index is out of range or the store already holds items.
        """
        if not 0 <= index < count:
            raise ConfigError(f"shard index {index} is not in [0, {count})")
        if self.ctx.next_id != 1:
            raise ConfigError("a store becomes a shard before its first write")
        self.ctx.next_id, self.ctx.id_stride = 1 + index, count
        self.shard = self.ctx.shard = (index, count)
        return self

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Per-tier counts; with ``caller``, of what it may read alone."""
        return {name.value: tier.stats(caller) for name, tier in self.tiers.items()}

    def get_state(self) -> dict[str, Any]:
        """A msgpack-safe snapshot of the whole store."""
        return {
            "version": STATE_VERSION,
            "dim": self.config.dim,
            "next_id": self.ctx.next_id,
            "tiers": {name.value: tier.get_state() for name, tier in self.tiers.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace everything with a snapshot from :meth:`get_state`.

        Raises:
            ConfigError: the snapshot is of another format version or dimension.
        """
        if state.get("version") not in READABLE_VERSIONS:
            raise ConfigError(
                f"snapshot version {state.get('version')!r}, expected one of "
                f"{sorted(READABLE_VERSIONS)}"
            )
        if state.get("dim") != self.config.dim:
            raise ConfigError(f"snapshot dim {state.get('dim')!r} != store dim {self.config.dim}")
        for name, tier in self.tiers.items():
            tier.set_state(state["tiers"][name.value])
        self.ctx.next_id = int(state["next_id"])
