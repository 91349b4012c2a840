"""SIGKILL a standalone bus server under write load 20 times; every acknowledged write must
be there exactly once.

    python benchmarks/kill_cycles.py            # 20 cycles, 4 writers
    python benchmarks/kill_cycles.py --quick    # 3 cycles (the CI test's size)

Each cycle writes for 0.5-1.5 s (random, seeded), kills ``hivemem bus serve`` with
SIGKILL and restarts it on the same data directory while the writers keep retrying.
Prints one JSON line; exits non-zero if an acknowledged write is missing or duplicated.
``--config`` gives the server a store config file, e.g. a low ``approx_threshold`` so
that HNSW builds on the builder thread run across the kills and snapshots, or a
``dedup`` write policy, whose decisions are journaled and played back across the kills
(``--vectors 384``: the writers send their own vectors).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from hivemem.memory_bus.testing.kill_cycles import kill_cycles


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 cycles")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--snapshot-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="the server's StoreConfig file (YAML/JSON)")
    parser.add_argument(
        "--vectors",
        type=int,
        default=0,
        metavar="DIM",
        help="write random unit vectors of DIM (the config's dim) instead of letting the bus "
        "embed the texts",
    )
    parser.add_argument(
        "--fsync",
        choices=["always", "everysec", "no"],
        default="no",
        help="the server's journal fsync policy (a SIGKILL loses nothing under any: the "
        "records are in the kernel's page cache; `always` exercises its group commit)",
    )
    args = parser.parse_args()
    cycles = 3 if args.quick else args.cycles
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        report = kill_cycles(
            Path(workdir),
            cycles,
            writers=args.writers,
            snapshot_every=args.snapshot_every,
            seed=args.seed,
            config=args.config,
            vectors=args.vectors,
            fsync=args.fsync,
        )
    figures = report.to_json()
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, sort_keys=True))
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
