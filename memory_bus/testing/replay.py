"""Replay check: a bus restarted on its data directory holds exactly what it held.

A restart loads the last snapshot and replays the journal through the same handlers as
live requests (:mod:`hivemem.memory_bus.durability`). The write policy's decisions are
journaled with their request and played back (:class:`~hivemem.memory_bus.proposals.
DecisionTape`); every other decision the store makes is made again, and gives back the
same store only if it is a function of what the store keeps: the items and their recall
counts, the namespace's seeded generator, the request's own arguments. An eviction
policy that reads the clock, an unseeded generator or a set's iteration order decides
otherwise on the replay, and the restarted bus then holds other items under the ids its
clients were given. :func:`check_replay` drives a real bus with a journal through a random mix of
every op (writes, batches, reads that count as recalls, updates, deletes, graph edges and
promotions; some items revise a fact by ``meta["key"]``, some expire), with snapshots
forked or written inline along the way, restarts it on the same directory and compares
the two stores as a client would read them.

Example:
    >>> from hivemem.memory_bus.testing import check_replay  # doctest: +SKIP
    >>> config = StoreConfig(dim=16, shared=TierConfig(capacity=40, eviction="mine"))
    >>> check_replay(config, tmp_path)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.failures import ContractFailure

AGENTS = {"alice": "team", "bob": "team", "carol": "other"}
"""Each agent and its one group: two share a group, one is alone in another."""

OPS = ("write", "write_many", "search", "search_many", "get", "update", "delete", "edge",
       "invalidate", "promote", "retrieve")  # fmt: skip
WEIGHTS = (3, 4, 4, 2, 2, 2, 1, 2, 1, 1, 2)


def logical_state(store: MemoryStore) -> dict[str, Any]:
    """The store as its clients read it: each namespace's items by id, their histories,
    its eviction count, event number and generator; each tier's decision counts; the
    graph's edges. Not how it lays them out (rows not yet built, index structures), which
    a restart may change without changing any answer."""
    state: dict[str, Any] = {"next_id": store.ctx.next_id}
    for name, tier in store.tiers.items():
        namespaces = {}
        for ns_name, ns in sorted(tier.namespaces.items()):
            items, raw = ns.items, ns.get_state()
            namespaces[ns_name] = {
                "items": [items[i].to_state() for i in sorted(items)],
                "indexed": len(ns.index),
                **{key: raw[key] for key in ("history", "evictions", "event_seq", "rng")},
            }
        state[name.value] = {"namespaces": namespaces, "decisions": dict(tier.decisions)}
    state["edges"] = {  # a namespace only read has an empty entry, which a replay lacks
        ns: sorted((e.to_state() for e in edges.values()), key=lambda e: e["id"])
        for ns, edges in sorted(store.graph.edge_index.items())
        if edges
    }
    return state


def first_difference(live: Any, recovered: Any, path: str = "") -> str | None:
    """Where two logical states first differ (a path and both values), or None."""
    if type(live) is not type(recovered):
        return f"{path}: {live!r:.80} against {recovered!r:.80}"
    if isinstance(live, dict):
        for key in sorted(set(live) | set(recovered), key=str):
            if key not in live or key not in recovered:
                return f"{path}/{key}: only in the {'live' if key in live else 'recovered'} store"
            found = first_difference(live[key], recovered[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(live, list):
        for i, (a, b) in enumerate(zip(live, recovered, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(live) != len(recovered):
            return f"{path}: {len(live)} entries live, {len(recovered)} recovered"
        return None
    return None if live == recovered else f"{path}: {live!r:.80} against {recovered!r:.80}"


class _Driver:
    """Random requests from every agent, with vectors near a few shared directions (so
    write policies find neighbours to update and skip)."""

    def __init__(self, clients: dict[str, MemoryClient], dim: int, seed: int) -> None:
        self.clients, self.random = clients, random.Random(seed)
        self.rng = np.random.default_rng(seed)
        self.basis = self.rng.standard_normal((12, dim)).astype(np.float32)
        self.ids: dict[tuple[str, str], list[int]] = {}  # (tier, namespace) -> ids written
        self.now = 0.0
        self.allow_plugin_errors = False

    def vector(self) -> np.ndarray:
        base = self.basis[self.random.randrange(len(self.basis))]
        v = base + 0.8 * self.rng.standard_normal(len(base)).astype(np.float32)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def item(self, tier: str, text: str, level: int = 0) -> NewItem:
        """A new item; some revise a fact by key (``dedup`` updates those), some expire."""
        extra: dict[str, Any] = {"level": level} if tier == "graph" else {}
        if self.random.random() < 0.3:
            extra["meta"] = {"key": f"fact-{self.random.randrange(8)}"}
        if self.random.random() < 0.2:
            extra["valid_to"] = self.now + self.random.randrange(1, 40)
        return NewItem(text, vector=self.vector(), importance=self.random.random(), **extra)

    def step(self, n: int) -> None:
        """One random request; the errors it meets are part of the run (a replay meets them too)."""
        self.now += 1.0
        agent = self.random.choice(sorted(self.clients))
        tier = self.random.choice(["private", "shared", "graph"])
        namespace = agent if tier == "private" else AGENTS[agent]
        op = self.random.choices(OPS, WEIGHTS)[0]
        try:
            getattr(self, op)(self.clients[agent], tier, namespace, n)
        except HivememError as exc:
            policy = exc.details.get("policy")
            if policy is not None and not self.allow_plugin_errors:
                raise ContractFailure(
                    f"request {n} ({op} on {tier}/{namespace}): policy {policy!r} failed it: "
                    f"{exc.message}"
                ) from exc

    def _known(self, tier: str, namespace: str) -> list[int]:
        return self.ids.setdefault((tier, namespace), [])

    def write(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        result = c.write(tier, ns, self.item(tier, f"fact {n}"), now=self.now)
        self._known(tier, ns).append(result.item_id)

    def write_many(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        entries = [(ns, self.item(tier, f"batch {n}.{i}")) for i in range(self.random.randrange(1, 12))]  # fmt: skip
        results = c.write_many(tier, entries, now=self.now)
        self._known(tier, ns).extend(r.item_id for r in results if r.item_id >= 0)

    def search(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        c.search(tier, ns, self.vector(), k=self.random.randrange(1, 8), now=self.now)

    def search_many(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        queries = [(ns, self.vector(), 3) for _ in range(self.random.randrange(1, 5))]
        c.search_many(tier, queries, now=self.now)

    def get(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        if self._known(tier, ns):
            c.get(tier, ns, self.random.choice(self._known(tier, ns)), now=self.now)

    def update(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        if self._known(tier, ns):
            item_id = self.random.choice(self._known(tier, ns))
            version = c.get(tier, ns, item_id).version
            c.update(tier, ns, item_id, expected_version=version, now=self.now,
                     text=f"revised {n}", vector=self.vector())  # fmt: skip

    def delete(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        if self._known(tier, ns):
            c.delete(tier, ns, self.random.choice(self._known(tier, ns)), now=self.now)

    def edge(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        nodes = self._known("graph", ns)
        if len(nodes) > 1:
            src, dst = self.random.sample(nodes, 2)
            c.add_edge(ns, src, dst, self.random.choice(["about", "causes"]), now=self.now)

    def invalidate(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        edges = c.edges(ns)
        if edges:
            c.invalidate_edge(ns, self.random.choice(edges)["id"], at=self.now)

    def promote(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        nodes = self._known("graph", ns)
        if len(nodes) > 2:
            parent = self.item("graph", f"insight {n}", level=1)
            self._known("graph", ns).append(c.promote(ns, self.random.sample(nodes, 2), parent, now=self.now))  # fmt: skip

    def retrieve(self, c: MemoryClient, tier: str, ns: str, n: int) -> None:
        c.retrieve(ns, self.vector(), k=4, now=self.now)


def check_replay(
    config: StoreConfig,
    data_dir: Path,
    *,
    ops: int = 300,
    seed: int = 0,
    snapshot_every: int = 37,
    fork_snapshots: bool = True,
    restart_config: StoreConfig | None = None,
    allow_plugin_errors: bool = False,
) -> dict[str, Any]:
    """Raise ``ContractFailure`` unless a bus restarted on ``data_dir`` holds what it held.

    Args:
        config: The store's configuration (the policies under test), for both buses.
        data_dir: An empty directory for the journal and snapshots.
        ops: Random requests, from three agents (two in one group).
        seed: Seeds the requests.
        snapshot_every: Journal records between snapshots, so that the restart loads a
            snapshot and replays the log after it.
        fork_snapshots: Write the snapshots from a forked process.
        restart_config: Restart under this configuration instead (a policy changed
            between two runs): the journal is replayed under the one that wrote it.
        allow_plugin_errors: Go on past a request a plug-in policy failed (it raised, or
            answered out of its contract: a ``config`` error naming it), to check that
            the restart fails it alike; by default such a request fails the check, as a
            policy that fails writes would pass it otherwise.

    Returns:
        The live store's logical state (:func:`logical_state`).
    """
    store = MemoryStore(config)
    server = BusServer(
        store,
        journal=Journal(data_dir, "no"),
        snapshot_every=snapshot_every,
        fork_snapshots=fork_snapshots,
    )
    tokens = {agent: server.register(agent, [group]) for agent, group in AGENTS.items()}
    with server:
        clients = {a: MemoryClient(server.address, a, t, timeout=30.0) for a, t in tokens.items()}
        try:
            driver = _Driver(clients, config.dim, seed)
            driver.allow_plugin_errors = allow_plugin_errors
            for n in range(ops):
                driver.step(n)
        finally:
            for client in clients.values():
                client.close()
    live = logical_state(store)
    again = MemoryStore(restart_config or config)
    with BusServer(again, journal=Journal(data_dir, "no"), fork_snapshots=False):
        pass  # recovered on start
    difference = first_difference(live, logical_state(again))
    if difference is not None:
        raise ContractFailure(f"the restarted bus differs at {difference}")
    return live
