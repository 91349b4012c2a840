"""Interfaces of the memory bus: what implementations promise, and nothing else.

Implementations live in their own modules (``embedder``, ``index``, ``tiers``,
``graph``, ``policies``; the transports in ``transport`` and ``local_transport``) and
depend on these shapes, not on each other's insides.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from hivemem.memory_bus.item import Item, NewItem, TierName, WriteOp


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into an (n, dim) float32 matrix of unit-norm rows."""

    dim: int

    def __call__(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the access rules are decided from these fields only.

    Attributes:
        agent_id: The agent's id; its private namespace has the same name.
        groups: Groups whose shared (and graph) namespaces the agent may touch.
        role: Names the graph levels the agent may touch (see ``AccessPolicy``).
    """

    agent_id: str
    groups: frozenset[str] = frozenset()
    role: str = "agent"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result. Score contract: higher is more similar (cosine for unit vectors)."""

    id: int
    score: float
    item: Item


@dataclass(frozen=True, slots=True)
class ScanPage:
    """One page of a namespace's items, in id order (``scan``).

    Attributes:
        items: The page's items.
        next: The cursor of the next page (give it as ``after``); None after the last.
    """

    items: list[Item]
    next: int | None


@dataclass(slots=True)
class SearchRequest:
    """One query of a batched search: ``k`` nearest items of ``namespace`` to ``vector``.

    ``as_of`` keeps only items valid at that time (None: no validity filter).
    """

    caller: Caller
    namespace: str
    vector: np.ndarray
    k: int = 10
    as_of: float | None = None


@dataclass(slots=True)
class WriteRequest:
    """One proposed write of a batch, decided by the namespace's write policy."""

    caller: Caller
    namespace: str
    item: NewItem


@dataclass(slots=True)
class WriteResult:
    """What a write did.

    Attributes:
        op: The write policy's decision.
        item_id: The new item (ADD), the updated one (UPDATE), the deleted one (DELETE),
            the duplicate that made it a NOOP, or -1.
        evicted: Ids evicted to make room.
    """

    op: WriteOp
    item_id: int
    evicted: list[int] = field(default_factory=list)


@dataclass(slots=True)
class EvictionContext:
    """What an eviction policy may know besides the candidates' features.

    Attributes:
        now: Simulation time.
        rng: The namespace's seeded generator (for the random policy).
        next_use: Simulation oracle: ``next_use(item, now)`` is the time of the item's
            next use after ``now``, ``inf`` if never.
            Only a simulation that knows its future sets it (Belady).
        incoming: The item whose arrival caused the eviction, if any.
        ids: The candidates' ids, in the order of the feature rows, if the caller has
            them (the store does: a policy need not read them off the items).
    """

    now: float
    rng: np.random.Generator
    next_use: Callable[[Item, float], float] | None = None
    incoming: Item | None = None
    ids: np.ndarray | None = None


@runtime_checkable
class EvictionPolicy(Protocol):
    """Chooses which items leave a namespace that is over capacity.

    Optional attributes a namespace reads: ``uses_relevance = False`` (the policy never
    reads the ``relevance`` column, so the store leaves it 0 rather than computing each
    candidate's cosine to the incoming item) and ``row_keys = True`` with a method
    ``keys(features, ctx) -> list[np.ndarray]``: the policy evicts the lowest keys (the
    first most significant, ties to the lower id) and a row's keys depend on that row
    alone, so the store sorts the candidates once per write instead of calling
    ``select`` for each eviction (``hivemem.memory_bus.candidates``); and
    ``feature_columns``, the names of the features (``FEATURE_NAMES``) the policy reads
    besides relevance: the store computes only those, leaving the others 0 (each is a
    pass over every candidate in Python). Without it, every feature is computed.
    """

    name: str

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        """Return the positions (into ``candidates``) of ``n`` distinct victims."""
        ...


@dataclass(frozen=True, slots=True)
class WriteDecision:
    """A write policy's answer: an operation and, for UPDATE/DELETE, its target id."""

    op: WriteOp
    target: int = -1


@runtime_checkable
class WritePolicy(Protocol):
    """Decides ADD / UPDATE / DELETE / NOOP for a proposed item (Memory-R1's operations).

    Optional attributes a tier reads: ``needs_neighbours = False`` (decide without a
    neighbour search) and ``always_adds = True`` (every proposal is an ADD, so a batch is
    stored whole, without a decision per row).
    """

    name: str

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        """Decide for ``proposal`` given its nearest neighbours in the target namespace."""
        ...


class Tier(Protocol):
    """The interface every tier offers. Every method checks access first."""

    name: TierName

    def write(self, caller: Caller, namespace: str, item: NewItem, *, now: float) -> WriteResult:
        """Propose one item; the namespace's write policy decides what happens."""
        ...

    def write_many(self, requests: Sequence[WriteRequest], *, now: float) -> list[WriteResult]:
        """Propose many items; all are validated before any is applied."""
        ...

    def get(
        self, caller: Caller, namespace: str, item_id: int, *, now: float | None = None
    ) -> Item:
        """One item by id; with ``now`` the read counts as a recall (hits, accessed)."""
        ...

    def search(
        self,
        caller: Caller,
        namespace: str,
        vector: np.ndarray,
        k: int = 10,
        *,
        now: float | None,
        as_of: float | None = None,
    ) -> list[Hit]:
        """The ``k`` most similar items, best first; with a ``now`` each counts as
        recalled (hits, accessed), with None none does."""
        ...

    def search_many(
        self, requests: Sequence[SearchRequest], *, now: float | None
    ) -> list[list[Hit]]:
        """Batched search over any mix of namespaces; one result list per request (a
        recall at ``now``, unless None)."""
        ...

    def update(
        self,
        caller: Caller,
        namespace: str,
        item_id: int,
        *,
        expected_version: int,
        now: float,
        **changes: Any,
    ) -> Item:
        """Change fields of an item if it is still at ``expected_version``."""
        ...

    def delete(self, caller: Caller, namespace: str, item_id: int, *, now: float) -> None:
        """Remove an item; its history stays."""
        ...

    def history(self, caller: Caller, namespace: str, item_id: int) -> list[dict[str, Any]]:
        """Every version of an item, oldest first, including a deletion marker."""
        ...

    def stats(self, caller: Caller | None = None) -> dict[str, Any]:
        """Counts for monitoring: namespaces, items, tokens, evictions by policy; with
        ``caller``, of the namespaces (and graph levels) it may read alone."""
        ...

    def get_state(self) -> dict[str, Any]:
        """A msgpack-safe snapshot of everything the tier holds."""
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the tier's contents with a snapshot from :meth:`get_state`."""
        ...


@runtime_checkable
class SyncTransport(Protocol):
    """A transport's blocking twin: one request at a time, in the caller's thread.

    Attributes:
        immediate: True if a call is answered in the caller's thread with no wait for
            I/O (a server in this process): a client then answers its ``nowait``
            requests at once instead of queueing them on its event loop.
    """

    immediate: bool

    def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        """Send one request and return its reply's result, or raise the error it stands for."""
        ...

    def close(self) -> None:
        """Release what the transport holds; idempotent."""
        ...


@runtime_checkable
class Transport(Protocol):
    """How a client's requests reach the bus, and their results come back (asyncio).

    The clients (``hivemem.memory_bus.client``) are written against this and take one as
    a collaborator. A request goes out as the protocol's frames
    (``hivemem.memory_bus.protocol``) whatever carries them, so the server decodes,
    authenticates, checks and journals it the same way. The bus ships two: the ZeroMQ
    DEALER (``transport.AsyncTransport``, the default) and ``local_transport.LocalTransport``
    (a server in the same process, called directly).
    """

    async def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        """Send one request and return its reply's result.

        Raises:
            HivememError: The error the reply stands for (a subclass named by its code),
                a failure on the way, or no reply in time (``BusTimeoutError``).
        """
        ...

    def number_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ... (idempotent replays)."""
        ...

    def blocking(self) -> SyncTransport | None:
        """A blocking twin numbering its requests in the same sequence, or None (a
        synchronous client then runs its calls on its event loop)."""
        ...

    def events(self, address: str, subscriptions: list[bytes]) -> AsyncGenerator[list[bytes], None]:
        """The frames of each message on the bus's event socket at ``address``, once
        ``subscriptions`` (the protocol's subscription messages) are sent."""
        ...

    def close(self) -> None:
        """Release what the transport holds (call from the loop that used it)."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """A change announced to listeners (the bus publishes these).

    ``kind`` is one of ``add``, ``update``, ``delete``, ``evict`` (of items), or ``edge``
    and ``invalidate`` (of a graph namespace's edges: one added, one whose validity ended).
    """

    kind: str
    tier: str
    namespace: str
    item_ids: Sequence[int]
    """The items it concerns: one, or the ids a batch added (then ``kind`` is ``add``);
    for an edge event, the edge's id."""
    version: int
    now: float
    seq: int = 0
    """The namespace's number of the first of these events (the others follow on):
    1, 2, 3, ... per namespace, kept in snapshots and made again by a replay, so the
    numbers go on across a restart. A subscriber that sees a number skipped missed events
    (``docs/protocol.md``, Events). 0: not numbered."""
    edge: Mapping[str, Any] | None = None
    """For an edge event, the edge: ``src``, ``dst``, ``type``, ``valid_from``,
    ``valid_to`` (published in place of an item's id and version)."""
