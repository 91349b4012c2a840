"""Soak: does a bus under a steady workload hold steady memory?

One bus server on loopback, its namespaces bounded (private capacity 20, shared 200),
and a round of requests after another, each round from a new ``MemoryClient`` (a new
connection and a new random client id) of one of 50 agents, which then disconnects:

  - a write to the agent's private namespace (evicting once it is full), a ``get`` and
    an ``update`` of it;
  - a ``write_many`` of 8 rows to the agent's group namespace (evicting), a ``search``
    and a ``search_many`` of it, both with ``now`` (recalls);
  - a ``write_many`` of 4 rows to the group's scratch namespace, and a ``delete`` of each
    row written there 4 rounds before: a namespace kept small by deletes, read by id
    alone (its batches stay columns, ``memory_bus/pending.py``);
  - every 25th round, an event subscriber that follows the group namespace, then leaves.

The baseline is the process's RSS after the warm-up (long enough for every namespace to
fill and for the retry memory, ``--dedup`` replies, to reach its bound), measured in the
same run. Printed: RSS and Python's allocated blocks (``sys.getallocatedblocks``: objects
alive, which the allocator's own slack does not blur) after each quarter of the measured
rounds, their growth per million requests as ratios of their baselines, and the server's
structures at warm-up and at the end. What must grow does: each delete leaves a deletion marker in the item's history
(``docs/architecture.md``, History), so the growth is also given per marker.

    python benchmarks/soak.py                     # 2,000 + 8,000 rounds (~2.5 min)
    python benchmarks/soak.py --journal           # with a data directory, snapshots
    python benchmarks/soak.py --quick             # 1,500 + 2,000 rounds
    python benchmarks/soak.py --no-delete         # no deletes: nothing may grow
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 32
AGENTS = 50
GROUPS = 5
LAG = 4  # rounds a scratch row lives before it is deleted
SUBSCRIBE_EVERY = 25


def rss_kb() -> int:
    """This process's resident set (the server and its clients share it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def structures(server: BusServer) -> dict[str, int]:
    """The sizes of what the server keeps per request, client, subscriber and item."""
    dispatch, publisher, store = server._dispatch, server._publisher, server.store
    namespaces = [ns for tier in store.tiers.values() for ns in tier.namespaces.values()]
    out = {
        "remembered replies": len(server._replies._replies),
        "remembered recalls": len(dispatch.recalls._replies),
        "verified tokens": len(dispatch.verified),
        "event grants": len(publisher._grants),
        "event keys": len(publisher._keys),
        "event marks": len(publisher._marks),
        "namespaces": len(namespaces),
        "items": sum(len(ns) for ns in namespaces),
        "pending batches": sum(len(ns._pending.batches) for ns in namespaces),
        "history entries": sum(len(h) for ns in namespaces for h in ns.history.values()),
    }
    if server.journal is not None:
        files = [f for f in server.journal.dir.iterdir() if f.is_file()]
        out["data files"] = len(files)
        out["data kB"] = sum(f.stat().st_size for f in files) // 1024
    return out


class Rounds:
    """The workload: one round at a time, each from a new client."""

    def __init__(self, server: BusServer, tokens: dict[str, str], seed: int) -> None:
        self.server, self.tokens = server, tokens
        self.pick = random.Random(seed)
        self.rng = np.random.default_rng(seed)
        self.scratch: dict[str, deque[list[int]]] = {}
        self.rounds = self.requests = self.deletes = 0
        self.delete = True

    def vector(self) -> np.ndarray:
        v = self.rng.standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def items(self, namespace: str, n: int) -> list[tuple[str, NewItem]]:
        return [(namespace, NewItem(f"r{self.rounds} {i}", self.vector())) for i in range(n)]

    def run(self) -> None:
        self.rounds += 1
        now = float(self.rounds)
        agent = self.pick.choice(list(self.tokens))
        group = f"g{int(agent[1:]) % GROUPS}"
        scratch = f"s{int(agent[1:]) % GROUPS}"
        with MemoryClient(self.server.address, agent, self.tokens[agent], timeout=10.0) as c:
            mine = c.write("private", agent, NewItem(f"note {self.rounds}", self.vector()), now=now)
            item = c.get("private", agent, mine.item_id, now=now)
            c.update("private", agent, item.id, expected_version=item.version, now=now, importance=1.0)  # fmt: skip
            c.write_many("shared", self.items(group, 8), now=now)
            c.search("shared", group, self.vector(), k=5, now=now)
            c.search_many("shared", [(group, self.vector(), 3), (group, self.vector(), 3)], now=now)  # fmt: skip
            written = c.write_many("shared", self.items(scratch, 4), now=now)
            self.requests += 8
            held = self.scratch.setdefault(scratch, deque())
            held.append([r.item_id for r in written])
            old = held.popleft() if len(held) > LAG else []
            for item_id in old if self.delete else []:
                c.delete("shared", scratch, item_id, now=now)
                self.requests += 1
                self.deletes += 1
            if self.rounds % SUBSCRIBE_EVERY == 0:
                for _ in c.events([f"shared/{group}"], timeout=0.02):
                    break
                self.requests += 1


def serve(journal: Journal | None, eviction: str, dedup: int) -> tuple[BusServer, dict[str, str]]:
    config = StoreConfig(
        dim=DIM,
        private=TierConfig(capacity=20, eviction=eviction),
        shared=TierConfig(capacity=200, eviction=eviction),
    )
    server = BusServer(MemoryStore(config), journal=journal, snapshot_every=2000, dedup_size=dedup)
    groups = lambda i: [f"g{i % GROUPS}", f"s{i % GROUPS}"]  # noqa: E731
    return server, {f"a{i}": server.register(f"a{i}", groups(i)) for i in range(AGENTS)}


def soak(args: argparse.Namespace, data_dir: str | None) -> dict[str, Any]:
    journal = None if data_dir is None else Journal(data_dir, fsync="no")
    server, tokens = serve(journal, args.eviction, args.dedup)
    with server:
        rounds = Rounds(server, tokens, args.seed)
        rounds.delete = not args.no_delete
        started = time.perf_counter()
        for _ in range(args.warm):
            rounds.run()
        gc.collect()
        base_rss, base_requests, base_deletes = rss_kb(), rounds.requests, rounds.deletes
        base_blocks = sys.getallocatedblocks()
        before = server.inspect(lambda _: structures(server))
        print(f"warm-up: {args.warm:,} rounds, {base_requests:,} requests, "
              f"{time.perf_counter() - started:.0f} s; RSS {base_rss / 1024:.1f} MB (baseline)")  # fmt: skip
        quarter = max(1, args.rounds // 4)
        for q in range(1, 5):
            for _ in range(quarter):
                rounds.run()
            gc.collect()
            grown, blocks = rss_kb() - base_rss, sys.getallocatedblocks() - base_blocks
            print(f"  +{q * quarter:,} rounds ({rounds.requests - base_requests:,} requests): "
                  f"RSS +{grown / 1024:.2f} MB, Python blocks {blocks:+,}", flush=True)  # fmt: skip
        after = server.inspect(lambda _: structures(server))
    print(f"\n{'structure':20s} {'warm-up':>10s} {'end':>10s}")
    for name, value in before.items():
        print(f"{name:20s} {value:>10,} {after[name]:>10,}")
    requests, deletes = rounds.requests - base_requests, rounds.deletes - base_deletes
    grown_kb, blocks = rss_kb() - base_rss, sys.getallocatedblocks() - base_blocks
    per_million = 1e6 / requests
    figures = {
        "rss_after_warmup_mb": base_rss / 1024,
        "rss_growth_per_million_requests_vs_warmup": grown_kb * per_million / base_rss,
        "python_blocks_growth_per_million_requests_vs_warmup": blocks * per_million / base_blocks,
        "pending_batches_end_vs_warmup": ratio(after, before, "pending batches"),
        "history_entries_end_vs_warmup": ratio(after, before, "history entries"),
    }
    if deletes:
        figures["rss_growth_per_deletion_marker_bytes"] = grown_kb * 1024 / deletes
    return figures


def ratio(after: dict[str, int], before: dict[str, int], name: str) -> float:
    return after[name] / max(before[name], 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warm", type=int, default=2000, help="rounds before the baseline")
    parser.add_argument("--rounds", type=int, default=8000, help="rounds measured")
    parser.add_argument("--quick", action="store_true", help="1,500 + 2,000 rounds")
    parser.add_argument("--journal", action="store_true", help="a data directory (fsync no)")
    parser.add_argument("--eviction", default="lru", help="both tiers' eviction policy")
    parser.add_argument("--dedup", type=int, default=4_000, help="replies remembered")
    parser.add_argument("--no-delete", action="store_true", help="scratch rows stay")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.warm, args.rounds = 1500, 2000
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    if args.journal:
        with tempfile.TemporaryDirectory(prefix="hivemem-soak-") as data_dir:
            figures = soak(args, data_dir)
    else:
        figures = soak(args, None)
    print()
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
