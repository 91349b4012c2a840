"""64 concurrent clients for 60 seconds against a standalone bus: errors, throughput, p50/p99.

    python benchmarks/bus_load.py             # 64 clients, 60 s, after a 5 s one-client baseline
    python benchmarks/bus_load.py --quick     # 64 clients, 5 s (the CI test's size)

The server is ``hivemem bus serve`` with a journal (``everysec`` fsync) on loopback. Every
client is its own connection, keeps one request in flight, and half its requests write
an item (384-d vector, unique key in meta) to its group's shared namespace (8 groups),
half search that namespace for 10 hits without vectors. The clients run as asyncio tasks
in 4 worker processes (see ``hivemem.memory_bus.testing.load`` for why). Afterwards the
server is stopped and its data directory recovered: every acknowledged write must be
there exactly once. Prints one JSON line; the ratios are against one client measured
first in the same run. Exits non-zero on any error, loss or duplicate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from hivemem.memory_bus.testing.load import load_test


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s instead of 60")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory() as workdir:
        result = load_test(
            Path(workdir),
            clients=args.clients,
            seconds=seconds,
            baseline_seconds=2.0 if args.quick else 5.0,
            processes=args.processes,
        )
    print(json.dumps(result.to_json(), sort_keys=True))
    clean = not result.load.errors and not result.baseline.errors
    return 0 if clean and not result.missing and not result.duplicates else 1


if __name__ == "__main__":
    sys.exit(main())
