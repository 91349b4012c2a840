"""What a snapshot costs the clients of a bus: written by a forked child or by the owner thread.

One client writes 64-item batches (384-d vectors, one private namespace) through
``MemoryClient`` into a bus with a data directory (``everysec``) and a snapshot every
``--every`` journal records, until the store holds ``--batches`` x 64 items. Targets, in
one run, each on a fresh server and data directory:

  - none: no data directory (no journal, no snapshots): the baseline;
  - journal-only: a data directory, snapshots too rare to happen (what the journal costs);
  - owner: snapshots written on the owner thread (``fork_snapshots=False``, the old way);
  - forked: snapshots written by a forked child (the default).

The index is exact (``flat``), so no HNSW build interrupts the writes. Printed: each
target's write latency (p50, p99, max) and total time, and the ratio of its p99 and max
to the baseline's; the headline ``name: value`` lines last.

    python benchmarks/snapshots.py            # 700 batches (44,800 items), every 100 records
    python benchmarks/snapshots.py --quick    # 300 batches, every 50 records
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import IndexConfig, IndexKind, StoreConfig, TierConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 384
BATCH = 64
SECRET = b"snapshot-benchmark-secret"
AGENT = "agent-0"


def one_target(kind: str, batches: int, every: int, root: Path) -> dict[str, float]:
    """Write ``batches`` batches into a fresh bus of the kind named; latencies and counts."""
    flat = TierConfig(index=IndexConfig(kind=IndexKind.FLAT))
    store = MemoryStore(StoreConfig(dim=DIM, private=flat), embed=False)
    journal = None if kind == "none" else Journal(root / kind, "everysec")
    server = BusServer(
        store,
        secret=SECRET,
        journal=journal,
        snapshot_every=10**9 if kind == "journal-only" else every,
        fork_snapshots=kind != "owner",
    )
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    entries = [(AGENT, NewItem(f"fact {i}", vector=v)) for i, v in enumerate(vectors)]
    latencies = []
    with server, MemoryClient(server.address, AGENT, token_for(SECRET, AGENT)) as client:
        started = time.perf_counter()
        for _ in range(batches):
            t0 = time.perf_counter()
            client.write_many("private", entries, now=0.0)
            latencies.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
    return {**latency_summary(latencies, total), "snapshots": float(server.snapshots)}


def latency_summary(seconds: list[float], total: float) -> dict[str, float]:
    """p50, p99 and max of the writes' latencies in ms, and the run's total seconds."""
    lat = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300 batches, every 50 records")
    parser.add_argument("--batches", type=int, help="batches of 64 items (default 700)")
    parser.add_argument("--every", type=int, help="journal records between snapshots (100)")
    args = parser.parse_args()
    batches = args.batches or (300 if args.quick else 700)
    every = args.every or (50 if args.quick else 100)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            kind: one_target(kind, batches, every, Path(tmp))
            for kind in ("none", "journal-only", "owner", "forked")
        }
    base = rows["none"]
    print(f"snapshot benchmark: {batches} batches of {BATCH} ({batches * BATCH:,} items), "
          f"dim {DIM}, a snapshot every {every} records")  # fmt: skip
    print(f"{'target':14s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>8s} {'total s':>8s} "
          f"{'snapshots':>9s} {'p99/none':>8s} {'max/none':>8s}")  # fmt: skip
    for kind, r in rows.items():
        print(f"{kind:14s} {r['p50_ms']:7.2f} {r['p99_ms']:7.1f} {r['max_ms']:8.1f} "
              f"{r['total_s']:8.2f} {r['snapshots']:9.0f} {r['p99_ms'] / base['p99_ms']:8.2f} "
              f"{r['max_ms'] / base['max_ms']:8.2f}")  # fmt: skip
    print()
    for kind in ("owner", "forked"):
        print(f"{kind}_snapshots_max_latency_vs_none: {rows[kind]['max_ms'] / base['max_ms']:.2f}")
        print(f"{kind}_snapshots_total_time_vs_none: {rows[kind]['total_s'] / base['total_s']:.2f}")


if __name__ == "__main__":
    main()
