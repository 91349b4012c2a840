"""Fuzz a live bus server with malformed frames and requests; print how each was answered.

    python benchmarks/fuzz_bus.py --count 100000 --seed 1
    python benchmarks/fuzz_bus.py --quick          # 10,000 inputs

The server journals to a temporary data directory. After every 64 inputs a valid search
is sent and must be answered ``ok``. At the end the acknowledged writes are read back,
the server is stopped and a second one recovers from the journal (so any input that got
journaled must replay cleanly) and must hold them too. Exits non-zero if the server
stopped answering, raised an internal error, or lost an acknowledged write.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.fuzz import fuzz, inputs

DIM = 32


def _server(data_dir: Path, secret: bytes) -> BusServer:
    """A journaled server with alice in the team (registered before start: not journaled)."""
    journal = Journal(data_dir, "no")
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)), secret=secret, journal=journal)
    server.register("alice", ["team"])
    return server


def _lost(server: BusServer, token: str, acked: dict[int, str]) -> int:
    with MemoryClient(server.address, "alice", token) as client:
        return sum(client.get("shared", "team", i).text != text for i, text in acked.items())


def _fuzz(server: BusServer, token: str, count: int, seed: int) -> tuple[dict[str, int], float]:
    probe = encode_request(
        1,
        1,
        "search",
        "alice",
        token,
        {"tier": "shared", "namespace": "team", "vector": np.ones(DIM, "<f4").tobytes(), "now": 1},
    )
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(server.address)
    start = time.perf_counter()
    try:
        counts = fuzz(sock, inputs(count, seed, "alice", token, DIM), probe=probe)
    finally:
        sock.close(linger=0)
        ctx.term()
    return counts, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10,000 inputs")
    args = parser.parse_args()
    count = 10_000 if args.quick else args.count
    with tempfile.TemporaryDirectory() as data_dir:
        server = _server(Path(data_dir), b"fuzz-secret" * 3)
        token = server.token("alice")
        with server, MemoryClient(server.address, "alice", token) as client:
            acked = {
                client.write("shared", "team", NewItem(f"fact {i}"), now=0.0).item_id: f"fact {i}"
                for i in range(100)
            }
            counts, elapsed = _fuzz(server, token, count, args.seed)
            lost = _lost(server, token, acked)
            alive = client.ping()["version"] == 1
        with _server(Path(data_dir), b"fuzz-secret" * 3) as recovered:
            lost_after_restart = _lost(recovered, token, acked)
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {code:20s} {n:>9,}")
    fuzzed = sum(counts.values()) - counts.get("probe_ok", 0)
    print(f"inputs: {fuzzed}")
    print(f"inputs_per_s: {fuzzed / elapsed:,.0f}")
    print(f"valid_probes_answered_ok: {counts.get('probe_ok', 0)}")
    print(f"internal_errors: {counts.get('internal', 0)}")
    print(f"server_alive_after: {alive}")
    print(f"acknowledged_writes_lost: {lost}")
    print(f"acknowledged_writes_lost_after_restart: {lost_after_restart}")
    bad = lost or lost_after_restart or counts.get("internal")
    return 0 if alive and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
