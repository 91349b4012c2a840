"""What each journal fsync policy costs writers: ``always`` and ``everysec`` against ``no``.

    python benchmarks/fsync.py            # 1 and 16 clients, 6 s per case
    python benchmarks/fsync.py --quick    # 1 and 16 clients, 2 s per case

Each case starts a fresh ``hivemem bus serve`` with a journal in a temporary directory
on this machine's disk (``tempfile``'s, which must not be a tmpfs for the figures to mean
anything), then its clients write single items (a 384-d vector and a unique key, one
request in flight each) to their group's shared namespace for the case's seconds, in 4
worker processes (``hivemem.memory_bus.testing.load``). The server is then stopped and
its data directory recovered: every acknowledged write must be there once (the
half-second of writes each case starts with, not counted, too).

The baseline is ``--fsync no`` at the same number of clients, measured in the same run:
the journal's writes without any fsync. Printed: a table, then one ``name: value`` line
per headline ratio (write rate under a policy ÷ the rate under ``no``). Exits non-zero on
an error, a lost write or a duplicate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.testing.load import KEY, LoadReport, LoadSpec, run_load
from hivemem.memory_bus.testing.server_process import ServerProcess, scan_data_dir

POLICIES = ("no", "everysec", "always")


def fsync_us(directory: Path, n: int = 200) -> float:
    """Median µs of one 1.6 kB append plus fsync in ``directory`` (the disk's own cost)."""
    path = directory / "probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(n):
            began = time.perf_counter()
            os.write(fd, b"x" * 1600)
            os.fsync(fd)
            times.append(time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(times)[n // 2] * 1e6


def one_case(workdir: Path, policy: str, clients: int, seconds: float) -> tuple[LoadReport, int]:
    """Run one case; its report and the number of acknowledged writes not held once."""
    server = ServerProcess(workdir / "data", snapshot_every=1_000_000, fsync=policy)
    server.start()
    try:
        with server.admin() as admin:
            crews: dict[str, list[tuple[str, str, str]]] = {"warm": [], "w": []}
            for prefix, crew in crews.items():
                for i in range(clients):
                    agent, group = f"{prefix}{i}", f"g{i % 4}"
                    admin.register(agent, [group])
                    crew.append((agent, server.token(agent), group))
        # Not counted: a fresh server's first writes (its keys are checked all the same).
        warm = run_load(
            LoadSpec(server.address, crews["warm"], 0.5, write_fraction=1.0), min(4, clients)
        )
        spec = LoadSpec(server.address, crews["w"], seconds, write_fraction=1.0)
        report = run_load(spec, processes=min(4, clients))
    finally:
        server.stop()
    held = scan_data_dir(server.data_dir, StoreConfig(), "shared", KEY)
    wrong = sum(1 for key in warm.acked + report.acked if held[key] != 1)
    return report, wrong


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 s per case instead of 6")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 6.0
    heads: list[str] = []
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"one 1.6 kB append + fsync here: {fsync_us(Path(tmp)):.0f} us (median of 200)")
        print(f"{'clients':>7s} {'fsync':>9s} {'writes/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s}"
              f" {'÷ no':>6s} {'lost':>5s}")  # fmt: skip
        for clients in args.clients:
            base = 0.0
            for policy in POLICIES:
                report, wrong = one_case(Path(tmp) / f"{policy}{clients}", policy, clients, seconds)
                bad += wrong + sum(report.errors.values())
                rate = report.throughput
                base = base or rate
                lat = report.latency_ms.get("write", {"p50": 0.0, "p99": 0.0})
                print(f"{clients:7d} {policy:>9s} {rate:9.0f} {lat['p50']:7.2f} {lat['p99']:7.2f}"
                      f" {rate / base:6.2f} {wrong:5d}")  # fmt: skip
                if policy != "no":
                    heads.append(f"{policy}_writes_vs_no_{clients}c: {rate / base:.2f}")
    for line in heads:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
