"""``stats``: the whole store for the admin, and for an agent what it may read alone.

Before, any authenticated caller (one never registered too) saw every tier's counts:
another agent's private items and tokens, the levels of a team's graph it is not in,
and the write decisions of every namespace.
"""

from __future__ import annotations

import numpy as np
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import AccessConfig, StoreConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 8


def vec(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    return v


def test_an_agent_counts_only_what_it_may_read() -> None:
    access = AccessConfig(graph_levels={"worker": [0]})
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, access=access)))
    tokens = {
        "alice": server.register("alice", ["team"]),
        "wendy": server.register("wendy", ["team"], role="worker"),
        "stranger": server.token("stranger"),
    }
    with server:
        clients = {a: MemoryClient(server.address, a, t, timeout=5.0) for a, t in tokens.items()}
        admin = MemoryClient(server.address, "__admin__", server.admin_token, timeout=5.0)
        try:
            alice = clients["alice"]
            alice.write("private", "alice", NewItem("my pin is 9931", vector=vec(0)), now=1.0)
            alice.write("shared", "team", NewItem("team fact", vector=vec(1)), now=1.0)
            events = [alice.write("graph", "team", NewItem(f"e{i}", vector=vec(i)), now=1.0) for i in range(2)]  # fmt: skip
            insight = alice.write("graph", "team", NewItem("plan", vector=vec(5), level=2), now=1.0)  # fmt: skip
            alice.add_edge("team", events[0].item_id, events[1].item_id, "follows", now=2.0)
            alice.add_edge("team", insight.item_id, events[0].item_id, "abstracts", now=2.0)
            seen = {agent: client.stats() for agent, client in clients.items()}
            whole = admin.stats()
        finally:
            for client in [*clients.values(), admin]:
                client.close()
    assert [seen["stranger"][t]["items"] for t in ("private", "shared", "graph")] == [0, 0, 0]
    assert seen["stranger"]["private"]["tokens"] == 0 and seen["stranger"]["graph"]["edges"] == 0
    assert seen["stranger"]["shared"]["decisions"] == {}
    assert seen["alice"]["private"]["items"] == 1 and seen["wendy"]["private"]["items"] == 0
    assert seen["alice"]["graph"]["items"] == 3 and seen["alice"]["graph"]["edges"] == 2
    assert seen["wendy"]["graph"]["items"] == 2 and seen["wendy"]["graph"]["edges"] == 1
    assert seen["wendy"]["graph"]["nodes_by_level"] == {"event": 2}
    assert seen["wendy"]["graph"]["evictions"] is None  # counted over every level
    assert seen["alice"]["graph"]["evictions"] == 0
    assert whole["private"]["items"] == 1 and whole["graph"]["nodes_by_level"]["insight"] == 1
    assert whole["shared"]["decisions"] == {"ADD": 1}
