"""What a graph namespace with many edges costs its node removals and edge lookups.

A graph namespace of 5,000 nodes (64-d vectors, capacity 5,000, fifo) and E random
edges; then ten 64-node writes, each evicting 64 nodes (whose open edges are closed),
and ``edges(node=...)`` for 200 nodes. Targets, in one run, on stores built the same way:

  - unbounded (the baseline for the writes): the same writes, no capacity, no evictions;
  - adjacency: the store as it is (a removed node's edges and a node's edges are found
    from the graph's adjacency, ``GraphTier._edges_touching``);
  - scan: what the store did before 2026-12-02: every edge of the namespace looked at
    for each removed node and each lookup (its two functions, as they were).

Printed: ms per 64-node write and per lookup, and the ratios; the headline
``name: value`` lines last.

    python benchmarks/graph_edges.py            # E = 10,000 and 50,000
    python benchmarks/graph_edges.py --quick    # E = 10,000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

import numpy as np
from hivemem.memory_bus.config import GraphConfig, StoreConfig
from hivemem.memory_bus.graph import INF, Edge, GraphTier
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore

DIM = 64
NODES = 5_000
BATCH = 64
WRITES = 10
LEAD = Caller("lead", frozenset({"team"}), role="lead")


def scanning(tier: GraphTier) -> None:
    """Give ``tier`` the old way: a scan of every edge to find those touching nodes."""

    def touching(namespace: str, nodes: Iterable[int]) -> list[Edge]:
        wanted = set(nodes)
        edges = tier.edge_index.get(namespace, {}).values()
        return [e for e in edges if e.src in wanted or e.dst in wanted]

    tier._edges_touching = touching  # type: ignore[method-assign]


def build(edges: int, capacity: int | None, scan: bool) -> tuple[MemoryStore, list[int]]:
    store = MemoryStore(
        StoreConfig(dim=DIM, graph=GraphConfig(capacity=capacity, eviction="fifo")), embed=False
    )
    if scan:
        scanning(store.graph)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((NODES + WRITES * BATCH, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = []
    for start in range(0, NODES, 500):
        rows = [WriteRequest(LEAD, "team", NewItem(f"n{i}", vector=vecs[i]))
                for i in range(start, start + 500)]  # fmt: skip
        ids += [r.item_id for r in store.graph.write_many(rows, now=1.0)]
    for src, dst in rng.choice(ids, (edges, 2)).tolist():
        store.graph.add_edge(LEAD, "team", src, dst, "x", now=1.0)
    store.vectors = vecs  # type: ignore[attr-defined]
    return store, ids


def per_write(store: MemoryStore) -> float:
    vecs = store.vectors  # type: ignore[attr-defined]
    started = time.perf_counter()
    for w in range(WRITES):
        first = NODES + w * BATCH
        rows = [WriteRequest(LEAD, "team", NewItem(f"n{i}", vector=vecs[i]))
                for i in range(first, first + BATCH)]  # fmt: skip
        store.graph.write_many(rows, now=2.0 + w)
    return (time.perf_counter() - started) / WRITES * 1e3


def per_lookup(store: MemoryStore, ids: list[int]) -> float:
    alive = [i for i in ids if i in store.graph.namespaces["team"].items][:200]
    started = time.perf_counter()
    for node in alive:
        store.graph.edges(LEAD, "team", node=node)
    return (time.perf_counter() - started) / len(alive) * 1e3


def closed_right(store: MemoryStore) -> bool:
    alive = set(store.graph.namespaces["team"].items)
    return all(
        e.valid_to != INF
        for e in store.graph.edge_index["team"].values()
        if e.src not in alive or e.dst not in alive
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="E = 10,000 only")
    args = parser.parse_args()
    print(f"graph edges: {NODES:,} nodes, {WRITES} writes of {BATCH} nodes evicting as many")
    print(f"{'edges':>7s} {'unbounded':>9s} {'adjacency':>9s} {'scan':>8s} {'scan/adj':>8s}"
          f" {'lookup adj':>10s} {'lookup scan':>11s} {'scan/adj':>8s}  (ms)")  # fmt: skip
    lines = []
    for edges in (10_000,) if args.quick else (10_000, 50_000):
        base = per_write(build(edges, None, False)[0])
        fast, ids = build(edges, NODES, False)
        slow, _ = build(edges, NODES, True)
        write_fast, write_slow = per_write(fast), per_write(slow)
        if not (closed_right(fast) and closed_right(slow)):
            raise SystemExit("an edge of a removed node is still open")
        look_fast, look_slow = per_lookup(fast, ids), per_lookup(slow, ids)
        print(f"{edges:7,d} {base:9.2f} {write_fast:9.2f} {write_slow:8.1f} {write_slow / write_fast:8.1f}"
              f" {look_fast:10.3f} {look_slow:11.2f} {look_slow / look_fast:8.1f}", flush=True)  # fmt: skip
        lines += [
            f"evicting_write_vs_unbounded_{edges}: {write_fast / base:.1f}",
            f"scan_vs_adjacency_write_{edges}: {write_slow / write_fast:.1f}",
            f"scan_vs_adjacency_lookup_{edges}: {look_slow / look_fast:.1f}",
        ]
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
