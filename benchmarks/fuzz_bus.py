"""Fuzz a live bus server with malformed frames and requests; print how each was answered.

    python benchmarks/fuzz_bus.py --count 100000 --seed 1

Exits non-zero if the server stopped answering, raised an internal error, or lost an
acknowledged write.
"""

from __future__ import annotations

import argparse
import sys
import time

import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.fuzz import fuzz, inputs

DIM = 32


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)))
    token = server.register("alice", ["team"])
    with server, MemoryClient(server.address, "alice", token) as client:
        acked = {
            client.write("shared", "team", NewItem(f"fact {i}"), now=0.0).item_id: f"fact {i}"
            for i in range(100)
        }
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(server.address)
        start = time.perf_counter()
        counts = fuzz(sock, inputs(args.count, args.seed, "alice", token, DIM))
        elapsed = time.perf_counter() - start
        sock.close(linger=0)
        ctx.term()
        lost = [i for i, text in acked.items() if client.get("shared", "team", i).text != text]
        alive = client.ping()["version"] == 1
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {code:20s} {n:>9,}")
    print(f"inputs: {sum(counts.values())}")
    print(f"inputs_per_s: {sum(counts.values()) / elapsed:,.0f}")
    print(f"internal_errors: {counts.get('internal', 0)}")
    print(f"server_alive_after: {alive}")
    print(f"acknowledged_writes_lost: {len(lost)}")
    return 0 if alive and not lost and not counts.get("internal") else 1


if __name__ == "__main__":
    sys.exit(main())
