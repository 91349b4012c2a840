"""How long the bus stops answering while a namespace's HNSW is built or merged.

One client writes distinct 384-d unit vectors, 64 per ``write_many``, into one private
namespace through ``MemoryClient``, pausing ``--pause`` seconds between batches, until
the namespace holds ``--batches`` x 64 items. Three targets, in one run:

  - flat (the baseline): an exact index only (``kind: flat``), nothing to build;
  - auto (the default): exact up to ``approx_threshold`` (50,000) items, then HNSW, and
    every ``build_batch`` (8,192) rows merged into it, built on the builder thread
    (``build: background``) while the bus answers;
  - inline: the same, built on the bus's owner thread (``build: inline``).

Printed: each target's write latency (p50, p99, max), its total time, the writes that
took over 100 ms (batch number and milliseconds), the structure at the end and the
builds still running, and the ratios of each target's max and total to flat's; the
headline ``name: value`` lines last.

    python benchmarks/index_stalls.py            # 1,000 batches (64,000 items), 2 ms apart (~1-2 min)
    python benchmarks/index_stalls.py --quick    # 820 batches: just past the first build
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import IndexBuild, IndexConfig, IndexKind, StoreConfig, TierConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from snapshots import latency_summary

DIM = 384
BATCH = 64
SECRET = b"index-stall-benchmark-secret"
AGENT = "agent-0"


TARGETS = {
    "flat": IndexConfig(kind=IndexKind.FLAT),
    "auto": IndexConfig(),
    "inline": IndexConfig(build=IndexBuild.INLINE),
}


def settle(store: MemoryStore) -> str:
    """The namespace's structure at the end (``+building``: a build still running), then
    its build finished, so that it does not hold the builder thread for the next target."""
    index = store.private.namespaces[AGENT].index
    structure = index.kind + ("+building" if index.building else "")
    index.finish_build()
    return structure


def one_target(index: IndexConfig, vectors: np.ndarray, pause: float) -> dict[str, Any]:
    """Write ``vectors`` in batches into a fresh bus with that index config; latencies."""
    tier = TierConfig(index=index)
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, private=tier), embed=False), secret=SECRET)
    latencies: list[float] = []
    with server, MemoryClient(server.address, AGENT, token_for(SECRET, AGENT), timeout=600) as c:
        started = time.perf_counter()
        for at in range(0, len(vectors), BATCH):
            entries = [(AGENT, NewItem("", vector=v)) for v in vectors[at : at + BATCH]]
            t0 = time.perf_counter()
            c.write_many("private", entries, now=0.0)
            latencies.append(time.perf_counter() - t0)
            if pause:
                time.sleep(pause)
        total = time.perf_counter() - started
        structure = server.inspect(settle)
    slow = [(i, round(s * 1e3)) for i, s in enumerate(latencies) if s > 0.1]
    return {**latency_summary(latencies, total), "slow": slow, "index": structure}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="820 batches")
    parser.add_argument("--batches", type=int, help="batches of 64 (default 1,000)")
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between batches")
    args = parser.parse_args()
    batches = args.batches or (820 if args.quick else 1_000)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((batches * BATCH, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = {name: one_target(index, vectors, args.pause) for name, index in TARGETS.items()}
    print(f"index stalls: {batches} batches of {BATCH} distinct {DIM}-d vectors into one "
          f"namespace, {args.pause * 1e3:g} ms apart")  # fmt: skip
    print(f"{'target':7s} {'index':14s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>9s} {'total s':>8s}  writes over 100 ms (batch, ms)")  # fmt: skip
    for kind, r in rows.items():
        print(f"{kind:7s} {r['index']!s:14s} {r['p50_ms']:7.2f} {r['p99_ms']:7.1f} {r['max_ms']:9.0f} "
              f"{r['total_s']:8.1f}  {r['slow']}")  # fmt: skip
    flat = rows["flat"]
    print()
    for name in ("auto", "inline"):
        print(f"{name}_max_write_vs_flat: {rows[name]['max_ms'] / flat['max_ms']:.1f}")
        print(f"{name}_total_time_vs_flat: {rows[name]['total_s'] / flat['total_s']:.2f}")


if __name__ == "__main__":
    main()
