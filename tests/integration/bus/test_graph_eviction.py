"""A bounded graph namespace over the bus: what its evictions take (findings of an audit).

``promote`` into a full namespace evicted the very children it was asked to link, and
answered success with no edge made; evicted nodes' edges were kept for ever, so a graph
namespace of capacity 10 held 39,999 edges after 40,000 linked writes.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import GraphConfig, StoreConfig
from hivemem.memory_bus.errors import CapacityError
from hivemem.memory_bus.item import NewItem, WriteOp
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

from .conftest import graph_client, unit_vector

DIM = 8


def unit(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


def node_ids(client: MemoryClient) -> list[int]:
    return [item.id for item in client.scan("graph", "team").items]


@pytest.mark.parametrize("eviction", ["lru", "fifo", "lfu", "memorybank"])
def test_promote_into_a_full_namespace_keeps_and_links_its_children(eviction: str) -> None:
    with graph_client(GraphConfig(capacity=3, eviction=eviction), DIM) as alice:
        a = alice.write("graph", "team", NewItem("door A locked", vector=unit(1)), now=1.0).item_id
        alice.write("graph", "team", NewItem("door B locked", vector=unit(2)), now=2.0)
        other = alice.write("graph", "team", NewItem("recalled", vector=unit(3)), now=3.0).item_id
        alice.get("graph", "team", other, now=4.0)  # a, then b: the least recent and used
        parent = alice.promote("team", [a], NewItem("doors locked", vector=unit(4), level=1), now=5.0)  # fmt: skip
        assert sorted(node_ids(alice)) == sorted([a, other, parent])  # b made the room
        assert [(e["src"], e["dst"]) for e in alice.edges("team")] == [(parent, a)]


def test_promote_with_detail_answers_as_a_write_does_with_what_it_evicted() -> None:
    """A promote's reply was the parent's id alone, so the evictions the parent caused
    went uncounted (a run's rows: items fell by more than their ``evicted`` said)."""
    with graph_client(GraphConfig(capacity=3, eviction="fifo"), DIM) as alice:
        a, b, c = (
            alice.write("graph", "team", NewItem(t, vector=unit(i)), now=float(i)).item_id
            for i, t in enumerate(["door A locked", "door B locked", "door C locked"], 1)
        )
        result = alice.promote(
            "team", [c], NewItem("doors locked", vector=unit(4), level=1), now=5.0, detail=True
        )
        assert (result.op, result.evicted) == (WriteOp.ADD, [a])  # the oldest but the child
        assert sorted(node_ids(alice)) == sorted([b, c, result.item_id])
        # without it, the parent's id, as before
        parent = alice.promote("team", [c], NewItem("C, again", vector=unit(5), level=1), now=6.0)
        assert isinstance(parent, int) and sorted(node_ids(alice)) == sorted([c, result.item_id, parent])  # fmt: skip


def test_promote_with_only_its_children_to_evict_is_refused_and_changes_nothing() -> None:
    with graph_client(GraphConfig(capacity=2), DIM) as alice:
        a = alice.write("graph", "team", NewItem("door A locked", vector=unit(1)), now=1.0).item_id
        b = alice.write("graph", "team", NewItem("door B locked", vector=unit(2)), now=2.0).item_id
        with pytest.raises(CapacityError, match=r"only the children of this promote"):
            alice.promote("team", [a, b], NewItem("doors", vector=unit(4), level=1), now=5.0)
        assert node_ids(alice) == [a, b]
        assert alice.edges("team") == []
        # one child of two: the other makes the room
        parent = alice.promote("team", [a], NewItem("door A", vector=unit(5), level=1), now=6.0)
        assert node_ids(alice) == [a, parent]


def linked_writes(alice: MemoryClient, n: int, start: float = 0.0) -> None:
    """``n`` nodes, each linked to the one before it (while that one is still there)."""
    prev = None
    for i in range(n):
        now = start + i + 1.0
        node = alice.write("graph", "team", NewItem(f"n{i}", vector=unit(i)), now=now).item_id
        if prev is not None:
            alice.add_edge("team", prev, node, "next", now=now)
        prev = node


def test_a_bounded_namespace_keeps_no_edge_of_an_evicted_node(tmp_path: Path) -> None:
    """Eviction means the memory is gone: its edges went on being kept (ended), so edges
    grew with every node ever written. They go with it now, and a restart on the
    journal and snapshot holds the same graph."""
    config = StoreConfig(dim=DIM, graph=GraphConfig(capacity=10, eviction="fifo"))

    def server() -> BusServer:
        journal = Journal(tmp_path, "no")
        return BusServer(MemoryStore(config), journal=journal, snapshot_every=50, fork_snapshots=False)  # fmt: skip

    first = server()
    token = first.register("alice", ["team"])
    with first, MemoryClient(first.address, "alice", token, timeout=5.0) as alice:
        linked_writes(alice, 120)
        edges = alice.edges("team")
        nodes = node_ids(alice)
        assert len(nodes) == 10
        # the 9 links between the 10 nodes left; none to a node evicted
        assert len(edges) == 9 and all({e["src"], e["dst"]} <= set(nodes) for e in edges)
        assert alice.stats()["graph"]["edges"] == 9
        graph = first.inspect(lambda store: store.graph.graphs["team"])
        assert sorted(graph.nodes) == nodes
        state = msgpack.packb(first.inspect(MemoryStore.get_state))
    assert first.snapshots > 0
    again = server()
    with again:
        assert msgpack.packb(again.inspect(MemoryStore.get_state)) == state
        assert sorted(again.inspect(lambda store: store.graph.graphs["team"]).nodes) == nodes
