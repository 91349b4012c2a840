"""What evicting costs a write into a full namespace, per policy and capacity.

One private namespace (384-d vectors, tier ``capacity`` C) is filled to C items; then
64-item writes arrive, each evicting 64 items. Targets, in one run, on the same items:

  - unbounded (the baseline): the same writes into a namespace without a capacity;
  - pool: the store as it is (one candidate matrix per write, kept in step:
    ``memory_bus/candidates.py``; for the policies whose keys are each row's own, the
    candidates sorted once per write);
  - select: the same pool without that sort, the policy's ``select`` called for each
    eviction (what the store did for every policy before 2026-12-02 15:30);
  - rebuild: the definition it replaced, a candidate matrix built afresh for every
    eviction (what the store did before 2026-12-02), timed on fewer writes.

Printed: milliseconds per 64-item write of each target, and the ratios pool/unbounded,
select/pool and rebuild/pool.

Then the steady state of agents' own memories: 1,000 namespaces of capacity C = 4 or 12,
each full, each written one item at a time (one row of a ``write_many`` per namespace,
an agent's fact of the tick). Targets: unbounded (no capacity), alone (the store since
2026-12-06: a write of one row evicts from a matrix built for it) and pool (a pool built
for that one eviction, as before). Printed: microseconds per row and alone/unbounded,
pool/alone. The headline ``name: value`` lines last.

    python benchmarks/eviction.py            # C = 1,000, 5,000, 20,000
    python benchmarks/eviction.py --quick    # C = 1,000 and 5,000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from hivemem.memory_bus.candidates import PoolSlot
from hivemem.memory_bus.config import TierConfig
from hivemem.memory_bus.item import Item, TierName
from hivemem.memory_bus.namespace import Namespace
from hivemem.memory_bus.policies import make_eviction_policy
from hivemem.memory_bus.testing.evictions import evictions_by_definition

DIM = 384
BATCH = 64
POLICIES = ("fifo", "lru", "memorybank", "generative_agents")


def make_items(start: int, n: int, now: float, rng: np.random.Generator) -> list[Item]:
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [
        Item(
            start + i,
            TierName.PRIVATE,
            "a",
            f"memory {start + i} of the red door",
            vecs[i],
            importance=float(rng.random()),
            created=now,
            accessed=now,
        )
        for i in range(n)
    ]


def filled(policy: str, capacity: int | None, fill: int, sort: bool = True) -> Namespace:
    """A namespace of ``fill`` items; ``sort=False`` hides the policy's ``row_keys``."""
    config = TierConfig(capacity=capacity, eviction=policy)
    chosen = make_eviction_policy(policy)
    if not sort:
        chosen.row_keys = False  # type: ignore[attr-defined]  # an instance attribute
    ns = Namespace(TierName.PRIVATE, "a", config, DIM, chosen, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for start in range(0, fill, 1_000):
        ns.add_many(make_items(start, min(1_000, fill - start), start / 100, rng), 0.0, None, _drop)
    for item in list(ns.items.values())[::3]:  # some recalls, so that lru and lfu differ
        item.hits, item.accessed = 1, item.created + 5
    return ns


def _drop(event: object) -> None:
    """Events go nowhere here."""


def per_write(ns: Namespace, writes: int, first_id: int) -> float:
    """Milliseconds per 64-item write through the store's own path."""
    rng = np.random.default_rng(2)
    batches = [make_items(first_id + w * BATCH, BATCH, 100.0 + w, rng) for w in range(writes)]
    started = time.perf_counter()
    for w, batch in enumerate(batches):
        ns.add_many(batch, 100.0 + w, None, _drop)
    return (time.perf_counter() - started) / writes * 1e3


def per_write_rebuilding(ns: Namespace, writes: int, first_id: int) -> float:
    """Milliseconds per 64-item write, a candidate matrix built for every eviction."""
    rng = np.random.default_rng(2)
    items, capacity = dict(ns.items), ns.config.capacity or 0
    batches = [make_items(first_id + w * BATCH, BATCH, 100.0 + w, rng) for w in range(writes)]
    started = time.perf_counter()
    for w, batch in enumerate(batches):
        evictions_by_definition(items, batch, ns.eviction, 100.0 + w, capacity, ns.rng)
    return (time.perf_counter() - started) / writes * 1e3


SMALL_CAPACITIES = (4, 12)
SMALL_NAMESPACES = 1_000


def per_row_small(policy: str, capacity: int | None, fill: int, rows: int | None) -> float:
    """Microseconds per one-item write into each of many full small namespaces.

    ``rows`` is what the write tells the namespace of its rows there (``PoolSlot``):
    1 lets it evict without a pool, None makes it build one.
    """
    rng = np.random.default_rng(3)
    config = TierConfig(capacity=capacity, eviction=policy)
    spaces = []
    for n in range(SMALL_NAMESPACES):
        ns = Namespace(TierName.PRIVATE, f"a{n}", config, DIM, make_eviction_policy(policy), rng)
        ns.add_many(make_items(n * 1_000, fill, float(n % 7), rng), 0.0, None, _drop)
        for item in list(ns.items.values())[::3]:
            item.hits, item.accessed = 1, item.created + 5
        spaces.append(ns)
    rounds = 4
    writes = [
        make_items(n * 1_000 + fill + r, 1, 10.0 + r, rng)
        for r in range(rounds)
        for n in range(SMALL_NAMESPACES)
    ]
    started = time.perf_counter()
    for w, one in enumerate(writes):
        spaces[w % SMALL_NAMESPACES].add_many(one, 10.0 + w // SMALL_NAMESPACES, None, _drop, PoolSlot(rows=rows))  # fmt: skip
    return (time.perf_counter() - started) / len(writes) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="capacities 1,000 and 5,000")
    parser.add_argument("--writes", type=int, default=10, help="64-item writes timed per target")
    args = parser.parse_args()
    capacities = (1_000, 5_000) if args.quick else (1_000, 5_000, 20_000)
    print(f"eviction: 64-item writes into one full namespace, dim {DIM}, ms per write")
    print(f"{'policy':18s} {'capacity':>8s} {'unbounded':>9s} {'pool':>8s} {'select':>8s}"
          f" {'rebuild':>9s} {'pool/unbounded':>14s} {'select/pool':>11s} {'rebuild/pool':>12s}")  # fmt: skip
    lines = []
    for capacity in capacities:
        rebuild_writes = max(1, min(args.writes, 40_000 // capacity))
        for policy in POLICIES:
            base = per_write(filled(policy, None, capacity), args.writes, capacity)
            pool = per_write(filled(policy, capacity, capacity), args.writes, capacity)
            select = per_write(filled(policy, capacity, capacity, sort=False), args.writes, capacity)  # fmt: skip
            rebuild = per_write_rebuilding(filled(policy, capacity, capacity), rebuild_writes, capacity)  # fmt: skip
            print(f"{policy:18s} {capacity:8,d} {base:9.2f} {pool:8.2f} {select:8.2f} {rebuild:9.1f}"
                  f" {pool / base:14.1f} {select / pool:11.1f} {rebuild / pool:12.1f}", flush=True)  # fmt: skip
            lines.append(f"pool_vs_unbounded_{policy}_{capacity}: {pool / base:.1f}")
            lines.append(f"select_vs_pool_{policy}_{capacity}: {select / pool:.1f}")
            lines.append(f"rebuild_vs_pool_{policy}_{capacity}: {rebuild / pool:.1f}")
    print(f"\none-item writes into {SMALL_NAMESPACES:,} full namespaces of C items, us per row")
    print(f"{'policy':18s} {'capacity':>8s} {'unbounded':>9s} {'alone':>8s} {'pool':>8s}"
          f" {'alone/unbounded':>15s} {'pool/alone':>10s}")  # fmt: skip
    for capacity in SMALL_CAPACITIES:
        for policy in POLICIES:
            base = per_row_small(policy, None, capacity, 1)
            alone = per_row_small(policy, capacity, capacity, 1)
            pool = per_row_small(policy, capacity, capacity, None)
            print(f"{policy:18s} {capacity:8,d} {base:9.1f} {alone:8.1f} {pool:8.1f}"
                  f" {alone / base:15.1f} {pool / alone:10.1f}", flush=True)  # fmt: skip
            lines.append(f"pool_vs_alone_{policy}_{capacity}: {pool / alone:.2f}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
