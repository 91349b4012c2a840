"""What following a namespace costs the bus: events sent once per agent's key.

Since ee766cb an agent's events go out on a key of its own (its signed subscription), so
that a registration that takes its access away stops them at once: a namespace followed
by N agents costs N sends per event (packed once). The admin's subscriptions keep the
plain topic, one send that ZeroMQ fans out, which is what every subscription cost before.

One bus server in a thread of this process (the default store, no journal); one client
writes single items into the shared namespace ``team``, one request at a time, while
N subscribers in another process follow ``shared/team``. Targets, measured in turn in
short slices (the order rotating, as in ``bus.py``) and each on a fresh server:

  - none: nobody subscribed (the writes alone);
  - plain: N subscriptions of the admin (one send per event);
  - keyed: N agents of the group (N sends per event).

Printed: writes/s, the bus's owner thread's CPU per write, events each subscriber
received (all must arrive: a check, not a figure), and the ratios; the headline
``name: value`` lines last.

    python benchmarks/events.py             # N = 1, 10, 50
    python benchmarks/events.py --quick     # N = 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

sys.path.insert(0, os.path.dirname(__file__))
from proc_cpu import thread_run_time

DIM = 32
SLICE_S = 2.0


def follow(address: str, secret_hex: str, agents: list[str], seconds: float) -> None:
    """The subscriber process: each of ``agents`` follows ``shared/team`` for
    ``seconds``; prints how many events each received, as JSON."""
    secret = bytes.fromhex(secret_hex)

    async def one(agent: str) -> int:
        client = AsyncMemoryClient(address, agent, token_for(secret, agent), timeout=5.0)
        count = 0
        try:
            stream = client.events(["shared/team"])
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(stream.__anext__(), left)
                except TimeoutError:
                    break
                count += 1
            await stream.aclose()
        finally:
            client.close()
        return count

    async def run() -> list[int]:
        return list(await asyncio.gather(*(one(a) for a in agents)))

    print(json.dumps(asyncio.run(run())), flush=True)


def target(kind: str, n: int, seconds: float) -> dict[str, Any]:
    """Writes for ``seconds`` with ``n`` subscribers of ``kind``; rate, CPU, deliveries."""
    secret = new_secret()
    config = StoreConfig(dim=DIM, shared=TierConfig(capacity=1_000_000))
    server = BusServer(MemoryStore(config), secret=secret)
    agents = [f"f{i}" for i in range(n)] if kind == "keyed" else [ADMIN_AGENT] * n
    for agent in set(agents) - {ADMIN_AGENT}:
        server.register(agent, ["team"])
    server.register("writer", ["team"])
    with server:
        follower = None
        if kind != "none":
            follower = subprocess.Popen(
                [sys.executable, __file__, "--follow", server.address, secret.hex(),
                 ",".join(agents), str(seconds + 3.0)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(2.0)  # the subscribers join
        with MemoryClient(server.address, "writer", server.token("writer")) as writer:
            tid = server.owner_thread_id
            cpu0, writes = thread_run_time(os.getpid(), tid or 0), 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                writer.write("shared", "team", NewItem(f"fact {writes}"), now=float(writes))
                writes += 1
            elapsed = time.perf_counter() - started
            cpu = thread_run_time(os.getpid(), tid or 0) - cpu0
        received = json.loads(follower.communicate(timeout=60)[0]) if follower else []
    return {"rate": writes / elapsed, "cpu_us": cpu / writes * 1e6, "writes": writes,
            "received": received}  # fmt: skip


def measure(n: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Each target ``rounds`` times, in rotating order; rates and CPU averaged."""
    kinds = ["none", "plain", "keyed"]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds[r % 3 :] + kinds[: r % 3]:
            runs[kind].append(target(kind, n, SLICE_S))
    out = {}
    for kind, rows in runs.items():
        complete = all(c == row["writes"] for row in rows for c in row["received"])
        out[kind] = {
            "rate": sum(r["rate"] for r in rows) / len(rows),
            "cpu_us": sum(r["cpu_us"] for r in rows) / len(rows),
            "complete": complete,
        }
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--follow":
        follow(sys.argv[2], sys.argv[3], sys.argv[4].split(","), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 10 only")
    args = parser.parse_args()
    sizes, rounds = ([10], 3) if args.quick else ([1, 10, 50], 3)
    results = {n: measure(n, rounds) for n in sizes}
    print(f"event fan-out: single writes into shared/team, {rounds} slices of {SLICE_S} s "
          "per target")  # fmt: skip
    print(f"{'N':>3s} {'target':6s} {'writes/s':>9s} {'owner us/write':>15s} "
          f"{'all events arrived':>18s} {'x none':>7s} {'x plain':>8s}")  # fmt: skip
    for n, rows in results.items():
        for kind, r in rows.items():
            print(f"{n:3d} {kind:6s} {r['rate']:9,.0f} {r['cpu_us']:15.0f} "
                  f"{r['complete']!s:>18s} {r['rate'] / rows['none']['rate']:7.2f} "
                  f"{r['rate'] / rows['plain']['rate']:8.2f}")  # fmt: skip
    print()
    for n, rows in results.items():
        print(f"keyed_{n}_write_rate_vs_plain: {rows['keyed']['rate'] / rows['plain']['rate']:.2f}")
        print(f"keyed_{n}_write_rate_vs_none: {rows['keyed']['rate'] / rows['none']['rate']:.2f}")
        print(
            f"keyed_{n}_owner_cpu_vs_plain: {rows['keyed']['cpu_us'] / rows['plain']['cpu_us']:.2f}"
        )


if __name__ == "__main__":
    main()
