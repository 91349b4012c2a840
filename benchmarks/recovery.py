"""How long a bus with a data directory takes to come back, against reading and decoding its files.

A bus server (journal ``no`` fsync, snapshots on the owner thread) takes ``--items``
writes through ``MemoryClient``: 64-item ``write_many`` batches of 384-d vectors, into
the private namespaces of ``--agents`` agents in turn. Its snapshot falls after half
the batches, so the data directory holds a snapshot of half the items and a journal of
the other half, as a server killed between two snapshots leaves it. Then, in turn, round
after round, on that same directory:

  - read: every file of the directory read into memory and each record's checksum
    checked (the floor: what any recovery must read);
  - decode: the same, and each record decoded with msgpack (the floor of a recovery that
    keeps this file format);
  - check: ``hivemem bus check`` of the directory (reads, checksums, decodes every
    record and checks their sequence);
  - recover: a ``BusServer`` started on the directory, until it is bound and answering,
    with the recovered store checked to hold every item.

Printed: each target's median time and the ratios of recover to the two floors, then
the headline ``name: value`` lines.

    python benchmarks/recovery.py --quick    # 192,000 items, 3 rounds
    python benchmarks/recovery.py            # 1,024,000 items, 3 rounds
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.data_check import check_data_dir
from hivemem.memory_bus.data_files import LOG_NAME, SNAPSHOT_NAME, log_parts
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.journal_frames import read_frames
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 384
BATCH = 64
SECRET = b"recovery-benchmark-secret"


def build(data_dir: Path, items: int, agents: int) -> int:
    """Write ``items`` into a bus on ``data_dir``; returns the journal records written."""
    batches = items // BATCH
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    server = BusServer(
        MemoryStore(StoreConfig(dim=DIM), embed=False),
        secret=SECRET,
        journal=Journal(data_dir, "no"),
        snapshot_every=batches // 2 + 1,  # one snapshot, past the middle
        snapshot_log_bytes=0,  # and none by the log's size
        fork_snapshots=False,
    )
    names = [f"agent-{i}" for i in range(agents)]
    tokens = {name: server.register(name) for name in names}
    with server, MemoryClient(server.address, timeout=120) as client:
        handles = [client.as_agent(name, tokens[name]) for name in names]
        for b in range(batches):
            name = names[b % agents]
            batch = [
                (name, NewItem(f"fact {b}.{i} of {name}", vector=v)) for i, v in enumerate(vectors)
            ]
            handles[b % agents].write_many("private", batch, now=float(b))
    if server.snapshots != 1:
        raise SystemExit(f"expected one snapshot, {server.snapshots} were taken")
    return batches


def frames_of(data_dir: Path) -> list[memoryview]:
    """Each file's records, their checksums checked (the journal's own reader)."""
    found = []
    files = [data_dir / SNAPSHOT_NAME, *(part for _, part in log_parts(data_dir))]
    for path in [*files, data_dir / LOG_NAME]:
        data = path.read_bytes()
        payloads, valid = read_frames(data, path)
        if valid != len(data):
            raise SystemExit(f"bad record in {path} at {valid}")
        found += payloads
    return found


def read(data_dir: Path, _: int) -> None:
    frames_of(data_dir)


def decode(data_dir: Path, _: int) -> None:
    for payload in frames_of(data_dir):
        msgpack.unpackb(payload, raw=False, strict_map_key=False)


def check(data_dir: Path, _: int) -> None:
    report = check_data_dir(data_dir)
    if not report.ok:
        raise SystemExit(f"hivemem bus check found damage: {report.damage}")


def recover(data_dir: Path, items: int) -> None:
    server = BusServer(
        MemoryStore(StoreConfig(dim=DIM), embed=False),
        secret=SECRET,
        journal=Journal(data_dir, "no"),
        fork_snapshots=False,
    )
    with server:
        held = server.store.stats()["private"]["items"]
    if held != items:
        raise SystemExit(f"recovered {held} items, expected {items}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="192,000 items")
    parser.add_argument("--items", type=int, help="items written (default 1,024,000)")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    items = args.items or (192_000 if args.quick else 1_024_000)
    items -= items % BATCH
    with tempfile.TemporaryDirectory(prefix="hivemem-recovery-") as tmp:
        data_dir = Path(tmp) / "data"
        t0 = time.perf_counter()
        records = build(data_dir, items, args.agents)
        built = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in data_dir.iterdir())
        print(
            f"recovery benchmark: {items:,} items ({records:,} batches of {BATCH}, dim {DIM}) "
            f"into {args.agents} agents, written in {built:.1f} s; data directory {size / 1e6:,.0f} MB:"
        )
        for path in sorted(data_dir.iterdir()):
            print(f"  {path.name:40s} {path.stat().st_size / 1e6:10,.1f} MB")
        targets = {"read": read, "decode": decode, "check": check, "recover": recover}
        times: dict[str, list[float]] = {name: [] for name in targets}
        for r in range(args.rounds):
            order = list(targets)[r % len(targets) :] + list(targets)[: r % len(targets)]
            for name in order:
                gc.collect()
                t0 = time.perf_counter()
                targets[name](data_dir, items)
                times[name].append(time.perf_counter() - t0)
        median = {name: statistics.median(ts) for name, ts in times.items()}
        print(f"{'target':10s} {'median s':>9s} {'runs s':>24s} {'items/s':>12s}")
        for name, ts in times.items():
            runs = " / ".join(f"{t:.2f}" for t in ts)
            print(f"{name:10s} {median[name]:9.2f} {runs:>24s} {items / median[name]:12,.0f}")
        print()
        print(f"recover_vs_read: {median['recover'] / median['read']:.2f}")
        print(f"recover_vs_decode: {median['recover'] / median['decode']:.2f}")
        print(f"check_vs_decode: {median['check'] / median['decode']:.2f}")
        print(f"recover_items_per_s: {items / median['recover']:,.0f}")
        print(f"data_dir_bytes_per_item: {size / items:,.0f}")


if __name__ == "__main__":
    main()
