"""The bus against its transport's limit and against Redis, measured in one run on loopback.

Baselines:
  - echo: a bare ZeroMQ ROUTER that decodes each msgpack request and answers a small
    msgpack reply, in a thread of this process, like the bus server;
  - echo-keep: the same, holding on to every request's bytes (the least a store does);
  - redis: Debian's redis-server (no persistence) with redis-py, SET of the same payload.

The bus targets: bus-raw and bus-client (``BusServer`` defaults, an embedded bus's);
bus-spin: raw frames against a bus that busy-polls for 200 us after each answer while
requests come that close together (``--spin-us 200``, ``hivemem bus serve``'s default);
bus-nopf: raw frames against a bus whose writes fault in their own pages
(``IndexConfig(prefault="off")``; by default the owner thread faults them in ahead, in
its idle time).

Targets, each with 1 and 4 client processes:
  - single: one item (text + 384-d float32 vector) per request, sequential requests;
  - batch: 64 items per request (``write_many`` in columns, what the client sends;
    redis: a pipeline of 64 SETs).

Each client process writes as 100 agents in turn, each request into one agent's private
namespace (an agent host's shape), with the store's default configuration; every case
(mode x processes) gets fresh servers, so one case's items do not slow the next. The bus
is driven two ways: raw protocol frames on a DEALER (what the transport allows) and the
``MemoryClient`` library (what a user gets). The echo receives exactly the raw bus
frames. Ratios are against the echo. Beside them, each row says what its server's
answering thread cost (CPU per request, read from the kernel's ``schedstat``) and how
much of the slices' time it ran: a thread busy nearly all the time is what limits the
target's rate, and no change outside it will raise it.

The targets of a case are measured interleaved: each in turn for a short slice, round
after round (the order rotating), by client processes started once that keep their
connections open. On this virtual machine the CPU's speed drifts by up to 1.75x from one
second to the next, so targets measured one after the other for seconds each gave ratios
that moved by 2x between runs; interleaved, every target sees the same drift.

The run also times, before and after, a batch's vectors copied into pages this process
never touched and into the same pages once touched (``kept pages``): every target that
keeps what it is sent pays the first, and on this VM it moves with the host's state
(``fresh_page_batch_copy_vs_touched``, last among the headline figures).

    python benchmarks/bus.py --quick     # 8 rounds of 0.2 s slices, under a minute
    python benchmarks/bus.py             # 24 rounds of 0.4 s slices, about 4 minutes
    python benchmarks/bus.py --quick --server-processes   # each server in its own process
    python benchmarks/bus.py --modes batch64 --targets echo,bus-raw   # some targets only

With ``--targets`` only the servers named run (the echo always does, as the baseline), so
fewer stores share the machine while one is measured; the headline then gives each
measured row's ratio to the echo.

The client side (the ops each worker process sends, and the workers) is in
``bus_clients.py``.

By default every echo and bus server is a thread of this process (as an embedded bus is
a thread of the runner's); ``--server-processes`` gives each its own process (as
``hivemem bus serve`` runs), so that no server's idle work or collections share an
interpreter with the one being measured.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import NamedTuple

import msgpack
import numpy as np
import zmq
from bus_clients import BATCH, DIM, SECRET, Workers
from hivemem.memory_bus.config import IndexConfig, Prefault, StoreConfig, TierConfig
from hivemem.memory_bus.forking import die_with_parent
from hivemem.memory_bus.protocol import HEADER
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from proc_cpu import machine_cpu, page_cost, thread_run_time

# --- servers --------------------------------------------------------------------------


class EchoServer:
    """Bare ROUTER: decode, reply, nothing else (with ``keep``, also hold every request).

    ``keep`` is the least any store must do beyond the transport: keep the bytes it was
    sent. On this virtual machine that is not free: memory a process touches for the
    first time (and memory freed a few seconds ago, which the guest hands back to the
    host) costs a page fault per 4 KiB, about 2.5 us per KiB written.
    """

    def __init__(self, keep: bool = False) -> None:
        self.kept: list[bytes] | None = [] if keep else None
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.address = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(100):
                continue
            while True:
                try:
                    ident, _, payload = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                req = msgpack.unpackb(payload, raw=False)
                if self.kept is not None:
                    self.kept.append(payload)
                self.sock.send_multipart(
                    [ident, HEADER, msgpack.packb({"id": req["id"], "ok": True, "result": None})]
                )

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close(linger=0)
        self.ctx.term()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    if shutil.which("redis-server") is None:
        return None
    port = free_port()
    # preexec_fn: a driver killed outright (SIGKILL, out of memory) takes its redis along
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            preexec_fn=partial(die_with_parent, signal.SIGTERM))  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    return None


class Served(NamedTuple):
    """Where a server answers, and the (pid, tid) of the thread that answers."""

    address: str
    thread: tuple[int, int]


def open_server(
    stack: ExitStack, kind: str, spin_us: int = 0, prefault: Prefault = Prefault.IDLE
) -> Served:
    """Start ``kind`` ("echo", "echo-keep" or "bus") in a thread of this process, closed
    with ``stack``."""
    if kind == "bus":
        bus = stack.enter_context(fresh_bus(spin_us, prefault))
        return Served(bus.address, (os.getpid(), bus.owner_thread_id or 0))
    echo = EchoServer(keep=kind == "echo-keep")
    stack.callback(echo.close)
    return Served(echo.address, (os.getpid(), echo.thread.native_id or 0))


def server_main(conn: Connection, kind: str, spin_us: int, prefault: str) -> None:
    """A server in a process of its own (``--server-processes``): sends where it serves,
    serves until the driver sends anything, then closes."""
    die_with_parent()
    with ExitStack() as stack:
        conn.send(tuple(open_server(stack, kind, spin_us, Prefault(prefault))))
        conn.recv()


def server_process(
    case: ExitStack, kind: str, spin_us: int = 0, prefault: Prefault = Prefault.IDLE
) -> Served:
    """Start ``kind`` ("echo", "echo-keep" or "bus") in its own process, stopped when
    ``case`` closes."""
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(
        target=server_main, args=(theirs, kind, spin_us, prefault.value), daemon=True
    )
    proc.start()

    def stop() -> None:
        ours.send(None)
        proc.join(timeout=10)

    case.callback(stop)
    address, thread = ours.recv()
    return Served(address, thread)


# --- the run --------------------------------------------------------------------------


SPIN_US = 200  # the bus-spin target's busy polling (BusServer spin_us, --spin-us)


def fresh_bus(spin_us: int = 0, prefault: Prefault = Prefault.IDLE) -> BusServer:
    """A bus server (started by `with`) with the default store configuration, no journal.

    Args:
        spin_us: The server's busy polling (the bus-spin target).
        prefault: The indexes' ``prefault`` (the bus-nopf target: off).
    """
    config = StoreConfig(dim=DIM, private=TierConfig(index=IndexConfig(prefault=prefault)))
    return BusServer(MemoryStore(config, embed=False), secret=SECRET, spin_us=spin_us)


class Target(NamedTuple):
    """A target of a case: the client kind that drives it, and the server it drives."""

    kind: str
    served: Served


@dataclass
class Tally:
    """What a target's slices measured: each request's latency, their wall time, the CPU
    its server's answering thread used, and the machine's busy and total CPU time
    (seconds)."""

    latencies: list[float] = field(default_factory=list)
    slices: int = 0
    wall: float = 0.0
    server_cpu: float = 0.0
    busy: float = 0.0
    total: float = 0.0


KEPT_PER_S = 1 << 30
"""At most what a target keeps per second of a batched slice (measured: 0.3-0.8 GB)."""


def _measure_slice(
    workers: Workers, target: Target, procs: int, batch: bool, slice_s: float, tally: Tally
) -> bool:
    """One slice of one target, added to its ``tally``; False (nothing run) if the memory
    it may keep is not there. Every target keeps what it is sent, so long slices
    (``--slice``) would otherwise run the machine out of memory."""
    if memory_available() < (1 << 30) + 1.5 * slice_s * KEPT_PER_S:
        return False
    cpu, (busy, total) = thread_run_time(*target.served.thread), machine_cpu()
    started = time.perf_counter()
    parts = workers.run(procs, (target.kind, target.served.address, batch, slice_s))
    tally.wall += time.perf_counter() - started
    tally.server_cpu += thread_run_time(*target.served.thread) - cpu
    busy_after, total_after = machine_cpu()
    tally.busy += busy_after - busy
    tally.total += total_after - total
    for part in parts:
        tally.latencies.extend(part)
    tally.slices += 1
    return True


def memory_available() -> int:
    """Bytes of memory available (``MemAvailable``; unbounded where there is no /proc)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def measure_case(
    workers: Workers,
    targets: dict[str, Target],
    procs: int,
    batch: bool,
    slice_s: float,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """Every target in turn, ``slice_s`` at a time, for ``rounds`` rounds.

    Interleaving is what makes the ratios mean something here: the virtual CPU's speed
    drifts by up to 1.75x from one second to the next (a busy loop measured on this
    machine), so two targets measured seconds apart are not comparable, while every
    target here sees the same drift. The order rotates each round.
    """
    names = list(targets)
    tallies = {name: Tally() for name in names}
    for target in targets.values():  # a slice of no time: each client connects, untimed
        workers.run(procs, (target.kind, target.served.address, batch, 0.0))
    for r in range(rounds):
        if not all(
            _measure_slice(workers, targets[name], procs, batch, slice_s, tallies[name])
            for name in names[r % len(names) :] + names[: r % len(names)]
        ):
            print(f"  (memory ran short: this case stopped in round {r + 1} of {rounds})")
            break
    short = [name for name, tally in tallies.items() if not tally.slices]
    if short:
        raise SystemExit(
            f"not enough memory for one slice of {', '.join(short)}: try a shorter --slice"
        )
    per_msg = BATCH if batch else 1
    out = {}
    for name, tally in tallies.items():
        arr = np.asarray(tally.latencies)
        out[name] = {
            "items_per_s": per_msg * len(arr) / (tally.slices * slice_s),
            "p50_us": float(np.percentile(arr, 50) * 1e6),
            "p99_us": float(np.percentile(arr, 99) * 1e6),
            "server_us_per_msg": tally.server_cpu / len(arr) * 1e6,
            "server_busy": tally.server_cpu / tally.wall,
            "busy": tally.busy / tally.total if tally.total else float("nan"),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 rounds of 0.2 s slices")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 8, or 24)")
    parser.add_argument(
        "--slice",
        type=float,
        help="seconds per target per round (batched targets keep ~0.3-1 GB a second: a "
        "case stops early, between slices, when memory runs short)",
    )
    parser.add_argument(
        "--targets",
        help=f"comma-separated targets to measure (default all: {', '.join(TARGETS)}); the "
        "echo always runs, as every ratio's baseline",
    )
    parser.add_argument(
        "--modes",
        default="single,batch64",
        help="comma-separated cases: single, batch64 (default both)",
    )
    parser.add_argument(
        "--server-processes",
        action="store_true",
        help="each echo and bus server in a process of its own, not a thread of this one",
    )
    args = parser.parse_args()
    only = _names(parser, args.targets, TARGETS) if args.targets else set(TARGETS)
    modes = _names(parser, args.modes, ("single", "batch64"))
    rounds = args.rounds or (8 if args.quick else 24)
    slice_s = args.slice or (0.2 if args.quick else 0.4)
    pages = [page_cost(BATCH * DIM * 4)]  # first: nothing else starting meanwhile
    redis_server = start_redis() if "redis" in only else None
    workers = Workers(4)
    rows: dict[tuple[str, str, int], dict[str, float]] = {}
    try:
        for batch in (False, True):
            mode = "batch64" if batch else "single"
            if mode not in modes:
                continue
            for procs in (1, 4):
                with ExitStack() as case:
                    targets = case_targets(
                        case, redis_server, batch, args.server_processes, only | {"echo"}
                    )
                    measured = measure_case(workers, targets, procs, batch, slice_s, rounds)
                rows.update(((name, mode, procs), row) for name, row in measured.items())
    finally:
        workers.close()
        if redis_server is not None:
            redis_server[0].kill()
    pages.append(page_cost(BATCH * DIM * 4))
    part = args.targets is not None or len(modes) < 2
    report(rows, redis_server is not None, pages, part)


TARGETS = ("echo", "echo-keep", "bus-raw", "bus-client", "bus-spin", "bus-nopf", "redis")


def _names(parser: argparse.ArgumentParser, given: str, known: tuple[str, ...]) -> set[str]:
    """The comma-separated names of ``given``, each one of ``known`` (else a usage error)."""
    names = {name.strip() for name in given.split(",") if name.strip()}
    unknown = sorted(names - set(known))
    if unknown or not names:
        parser.error(f"unknown {', '.join(unknown) or 'nothing'}: choose from {', '.join(known)}")
    return names


def case_targets(
    case: ExitStack,
    redis_server: tuple[subprocess.Popen[bytes], int] | None,
    batch: bool,
    own_processes: bool = False,
    only: Collection[str] = TARGETS,
) -> dict[str, Target]:
    """Fresh servers for one case, by name (those of ``only``).

    bus-nopf only in the batched cases: prefaulting acts on a namespace's
    growth, which single writes make slowly. ``own_processes``: each server in a
    process of its own (else a thread of this one).
    """

    def start(kind: str, spin_us: int = 0, prefault: Prefault = Prefault.IDLE) -> Served:
        opened = server_process if own_processes else open_server
        return opened(case, kind, spin_us, prefault)

    made = {
        "echo": lambda: Target("raw", start("echo")),
        "echo-keep": lambda: Target("raw", start("echo-keep")),
        "bus-raw": lambda: Target("raw", start("bus")),
        "bus-client": lambda: Target("client", start("bus")),
        "bus-spin": lambda: Target("raw", start("bus", SPIN_US)),
    }
    if batch:
        made["bus-nopf"] = lambda: Target("raw", start("bus", prefault=Prefault.OFF))
    targets = {name: make() for name, make in made.items() if name in only}
    if redis_server is not None:
        import redis

        proc, port = redis_server
        redis.Redis(port=port).flushall()
        # redis-server answers commands on its main thread
        targets["redis"] = Target("redis", Served(str(port), (proc.pid, proc.pid)))
    return targets


def report(
    rows: dict[tuple[str, str, int], dict[str, float]],
    with_redis: bool,
    pages: list[tuple[float, float]],
    part: bool = False,
) -> None:
    print(f"bus benchmark: loopback, dim {DIM}, batches of {BATCH}, {os.cpu_count()} cores")
    copies = " / ".join(
        f"{fresh * 1e6:.0f} µs (touched: {touched * 1e6:.0f})" for fresh, touched in pages
    )
    print(
        f"kept pages: a batch's vectors ({BATCH * DIM * 4:,} B) copied into fresh pages in "
        f"{copies}, before / after the run; every target that keeps its batches pays this"
        f"{reporting_note()}"
    )
    print(
        f"{'target':12s} {'mode':8s} {'procs':>5s} {'items/s':>10s} {'p50 us':>8s} {'p99 us':>8s}"
        f" {'rate/echo':>9s} {'p50/echo':>8s} {'srv us/msg':>10s} {'srv busy':>8s} {'all busy':>8s}"
    )
    for (target, mode, procs), row in rows.items():
        base = rows[("echo", mode, procs)]
        print(f"{target:12s} {mode:8s} {procs:5d} {row['items_per_s']:10,.0f} {row['p50_us']:8.0f} {row['p99_us']:8.0f}"
              f" {row['items_per_s'] / base['items_per_s']:9.2f} {row['p50_us'] / base['p50_us']:8.2f}"
              f" {row['server_us_per_msg']:10.0f} {row['server_busy']:8.0%} {row['busy']:8.0%}")  # fmt: skip
    print(
        "srv us/msg: CPU time of the server's answering thread (the bus's owner thread, "
        "redis-server's main thread) per request; srv busy: the share of the slices' time "
        "it ran (near 100%: it is what limits the rate); all busy: the share of every core "
        "in use (or taken by the host)"
    )
    head: dict[str, float] = {}
    if part:  # some targets or modes: the ratios of what was measured
        head_of_part(rows, pages)
        return
    for who in ("bus-raw", "bus-client", "bus-spin"):
        for procs in (1, 4):
            head[f"{who}_batched_write_items_per_s_vs_echo_keep_{procs}p"] = (
                rows[(who, "batch64", procs)]["items_per_s"]
                / rows[("echo-keep", "batch64", procs)]["items_per_s"]
            )
        head[f"{who}_batched_write_items_per_s_vs_echo_1p"] = (
            rows[(who, "batch64", 1)]["items_per_s"] / rows[("echo", "batch64", 1)]["items_per_s"]
        )
        head[f"{who}_batched_write_items_per_s_vs_echo_4p"] = (
            rows[(who, "batch64", 4)]["items_per_s"] / rows[("echo", "batch64", 4)]["items_per_s"]
        )
        if with_redis:
            head[f"{who}_batched_write_vs_redis_pipelined_set_1p"] = (
                rows[(who, "batch64", 1)]["items_per_s"]
                / rows[("redis", "batch64", 1)]["items_per_s"]
            )
            head[f"{who}_batched_write_vs_redis_pipelined_set_4p"] = (
                rows[(who, "batch64", 4)]["items_per_s"]
                / rows[("redis", "batch64", 4)]["items_per_s"]
            )
        head[f"{who}_single_p50_vs_echo"] = (
            rows[(who, "single", 1)]["p50_us"] / rows[("echo", "single", 1)]["p50_us"]
        )
        head[f"{who}_single_p99_vs_echo"] = (
            rows[(who, "single", 1)]["p99_us"] / rows[("echo", "single", 1)]["p99_us"]
        )
    for procs in (1, 4):
        head[f"bus-nopf_batched_write_items_per_s_vs_echo_{procs}p"] = (
            rows[("bus-nopf", "batch64", procs)]["items_per_s"]
            / rows[("echo", "batch64", procs)]["items_per_s"]
        )
    head["fresh_page_batch_copy_vs_touched"] = sum(f for f, _ in pages) / sum(t for _, t in pages)
    print()
    for name, value in head.items():
        print(f"{name}: {value:.2f}")


def head_of_part(
    rows: dict[tuple[str, str, int], dict[str, float]], pages: list[tuple[float, float]]
) -> None:
    """The headline of a run of some targets or modes (``--targets``, ``--modes``): each
    measured row's items/s, and p50 and p99 for single writes, as ratios to the echo's."""
    print()
    for (target, mode, procs), row in rows.items():
        base = rows[("echo", mode, procs)]
        if target == "echo":
            continue
        if mode == "batch64":
            ratio = row["items_per_s"] / base["items_per_s"]
            print(f"{target}_batched_write_items_per_s_vs_echo_{procs}p: {ratio:.2f}")
        elif procs == 1:
            print(f"{target}_single_p50_vs_echo: {row['p50_us'] / base['p50_us']:.2f}")
            print(f"{target}_single_p99_vs_echo: {row['p99_us'] / base['p99_us']:.2f}")
    fresh = sum(f for f, _ in pages) / sum(t for _, t in pages)
    print(f"fresh_page_batch_copy_vs_touched: {fresh:.2f}")


def reporting_note() -> str:
    """Whether the guest hands freed memory back to its host (free page reporting: the
    next first touch of that memory then faults in the host as well)."""
    try:
        with open("/sys/module/page_reporting/parameters/page_reporting_order") as f:
            order = int(f.read())
    except (OSError, ValueError):
        return ""
    return f" (page_reporting_order {order}: freed blocks of {(4 << order) // 1024} MiB go back)"


if __name__ == "__main__":
    main()
