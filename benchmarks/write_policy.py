"""What a write policy that reads neighbours (``dedup``, Memory-R1 style) costs a batch.

One shared namespace (384-d vectors) holds N items; then ten 64-proposal writes arrive,
distinct vectors (each decided ADD after its neighbours are searched). Targets, in one
run, each on its own store filled the same way, unbounded and full (capacity N, lru):

  - always_add (the baseline): no decisions, no neighbour search;
  - dedup: the store as it is (the batch's proposals searched together, one candidate
    pool per write: ``memory_bus/neighbours.py``, ``memory_bus/candidates.py``);
  - dedup-row-by-row: what the store did before 2026-12-02: a search per proposal, and
    at capacity a candidate matrix built for every stored ADD.

Printed: ms per 64-proposal write, and the ratios to always_add and of row-by-row to
dedup; the headline ``name: value`` lines last.

    python benchmarks/write_policy.py            # N = 5,000 and 20,000
    python benchmarks/write_policy.py --quick    # N = 5,000
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from hivemem.memory_bus import proposals
from hivemem.memory_bus.candidates import PoolSlot
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore

DIM = 384
BATCH = 64
WRITES = 10
CALLER = Caller("a", frozenset({"g"}))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def per_write(policy: str, n: int, capacity: int | None, row_by_row: bool) -> float:
    """Milliseconds per 64-proposal write into a namespace of ``n`` items."""
    config = TierConfig(write_policy=policy, capacity=capacity, eviction="lru")
    store = MemoryStore(StoreConfig(dim=DIM, shared=config), embed=False)
    rng = np.random.default_rng(0)
    fill = unit(rng, n)
    saved = proposals.BATCH_SEARCH_FROM, proposals.PoolSlot
    proposals.BATCH_SEARCH_FROM = 0  # filled as fast as the store allows
    try:
        for start in range(0, n, BATCH):
            rows = [WriteRequest(CALLER, "g", NewItem(f"fact {start + i}", vector=v))
                    for i, v in enumerate(fill[start : start + BATCH])]  # fmt: skip
            store.shared.write_many(rows, now=1.0)
        if row_by_row:
            proposals.BATCH_SEARCH_FROM, proposals.PoolSlot = 1 << 62, partial(PoolSlot, keep=False)  # type: ignore[misc]
        else:
            proposals.BATCH_SEARCH_FROM = saved[0]
        batches = [
            [
                WriteRequest(CALLER, "g", NewItem(f"new {w} {i}", vector=v))
                for i, v in enumerate(unit(rng, BATCH))
            ]
            for w in range(WRITES)
        ]
        started = time.perf_counter()
        for w, rows in enumerate(batches):
            store.shared.write_many(rows, now=2.0 + w)
        return (time.perf_counter() - started) / WRITES * 1e3
    finally:
        proposals.BATCH_SEARCH_FROM, proposals.PoolSlot = saved  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 5,000 only")
    args = parser.parse_args()
    sizes = (5_000,) if args.quick else (5_000, 20_000)
    print(f"write policies: {WRITES} writes of {BATCH} distinct {DIM}-d proposals, ms per write")
    print(f"{'items':>7s} {'capacity':>9s} {'always_add':>10s} {'dedup':>8s} {'row-by-row':>10s}"
          f" {'dedup/always_add':>16s} {'row-by-row/dedup':>16s}")  # fmt: skip
    lines = []
    for n in sizes:
        for capacity in (None, n):
            base = per_write("always_add", n, capacity, False)
            dedup = per_write("dedup", n, capacity, False)
            rows = per_write("dedup", n, capacity, True)
            label = "full" if capacity else "unbounded"
            print(f"{n:7,d} {label:>9s} {base:10.2f} {dedup:8.2f} {rows:10.1f}"
                  f" {dedup / base:16.1f} {rows / dedup:16.1f}", flush=True)  # fmt: skip
            lines.append(f"dedup_vs_always_add_{label}_{n}: {dedup / base:.1f}")
            lines.append(f"row_by_row_vs_dedup_{label}_{n}: {rows / dedup:.1f}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
