"""Many concurrent clients against a live bus: mixed writes and searches, closed loop.

Each client is its own connection (a DEALER socket with its own client id) that keeps one
request in flight: it writes an item with a unique key in ``meta`` to its group's shared
namespace, or searches that namespace, and sends the next request when the reply comes.
The clients run as asyncio tasks spread over a few worker processes: one process cannot
drive 64 connections fast enough (every request is encoded and decoded under one GIL),
and 64 processes on a two-core machine would measure the scheduler instead of the bus.

Used by ``benchmarks/bus_load.py`` (64 clients, 60 s) and the test suite (5 s).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.testing.server_process import ServerProcess, scan_data_dir

KEY = "key"
"""The meta field that holds a write's unique key."""


@dataclass(frozen=True)
class LoadSpec:
    """What the clients do.

    Attributes:
        address: The server's ROUTER address.
        agents: ``(agent, token, group)`` of each client.
        seconds: How long every client keeps sending.
        write_fraction: Share of requests that are writes (the rest are searches).
        dim: The store's vector dimension.
        k: Hits per search.
        seed: Seeds each client's choices and vectors.
    """

    address: str
    agents: list[tuple[str, str, str]]
    seconds: float
    write_fraction: float = 0.5
    dim: int = 384
    k: int = 10
    seed: int = 0


@dataclass
class ClientTally:
    """What one worker process's clients saw."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"write": [], "search": []})
    errors: dict[str, int] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: ClientTally) -> None:
        for op, values in other.latencies.items():
            self.latencies.setdefault(op, []).extend(values)
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        self.acked.extend(other.acked)
        self.seconds = max(self.seconds, other.seconds)


class _Start:
    """The moment the clients start, and the deadline it sets."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.deadline = 0.0

    def give(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.event.set()


async def _client(spec: LoadSpec, index: int, start: _Start, tally: ClientTally) -> None:
    agent, token, group = spec.agents[index]
    rng = np.random.default_rng([spec.seed, index])
    client = AsyncMemoryClient(spec.address, agent, token, timeout=10.0, retries=2)
    try:
        await client.ping()  # connected before the clock starts
        await start.event.wait()
        n = 0
        while time.monotonic() < start.deadline:
            await _one_request(spec, client, rng, f"{agent}:{n}", group, tally)
            n += 1
    finally:
        client.close()


async def _one_request(
    spec: LoadSpec,
    client: AsyncMemoryClient,
    rng: np.random.Generator,
    key: str,
    group: str,
    tally: ClientTally,
) -> None:
    vector = rng.standard_normal(spec.dim).astype(np.float32)
    op = "write" if rng.random() < spec.write_fraction else "search"
    now = float(len(tally.acked))
    began = time.perf_counter()
    try:
        if op == "write":
            item = NewItem(f"{key} holds a fact", vector=vector, meta={KEY: key})
            await client.write("shared", group, item, now=now)
        else:
            await client.search("shared", group, vector, spec.k, now=now, vectors=False)
    except HivememError as exc:
        tally.errors[exc.code] = tally.errors.get(exc.code, 0) + 1
        return
    tally.latencies[op].append(time.perf_counter() - began)
    if op == "write":
        tally.acked.append(key)


async def _drive(spec: LoadSpec, indices: list[int], ready: Any, go: Any) -> ClientTally:
    """Connect this worker's clients, report ready, wait for ``go``, run them."""
    tally = ClientTally()
    start = _Start()
    tasks = [asyncio.create_task(_client(spec, i, start, tally)) for i in indices]
    await asyncio.sleep(0)  # let every client send its ping
    ready.put(len(indices))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    start.give(spec.seconds)
    began = time.monotonic()
    await asyncio.gather(*tasks)
    tally.seconds = time.monotonic() - began
    return tally


def _worker(spec: LoadSpec, indices: list[int], ready: Any, go: Any, results: Any) -> None:
    results.put(asyncio.run(_drive(spec, indices, ready, go)))


@dataclass
class LoadReport:
    """Totals over every client."""

    clients: int
    seconds: float
    requests: int
    errors: dict[str, int]
    acked: list[str]
    latency_ms: dict[str, dict[str, float]]

    @property
    def throughput(self) -> float:
        """Answered requests per second, all clients together."""
        return self.requests / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "errors": sum(self.errors.values()),
            "errors_by_code": self.errors,
            "acknowledged_writes": len(self.acked),
            "requests_per_second": round(self.throughput, 1),
            "latency_ms": self.latency_ms,
        }


def run_load(spec: LoadSpec, processes: int = 4) -> LoadReport:
    """Run ``spec``'s clients over ``processes`` worker processes; the merged report.

    Raises:
        HivememError: a worker died or did not report within a minute past the run.
    """
    ctx = multiprocessing.get_context("spawn")  # no forked copies of ZeroMQ contexts
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    n = len(spec.agents)
    shares = [list(range(n))[p::processes] for p in range(min(processes, n))]
    workers = [
        ctx.Process(target=_worker, args=(spec, share, ready, go, results), daemon=True)
        for share in shares
    ]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            ready.get(timeout=120)
        go.set()
        total = ClientTally()
        for _ in workers:
            total.merge(results.get(timeout=spec.seconds + 60))
    except queue.Empty as exc:
        raise HivememError("a load worker died or stopped reporting") from exc
    finally:
        for w in workers:
            w.join(timeout=30)
    return _report(n, total)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "count": len(seconds),
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "max": round(float(ms.max()), 3),
    }


def _report(clients: int, tally: ClientTally) -> LoadReport:
    latency = {op: _percentiles(v) for op, v in tally.latencies.items() if v}
    everything = [v for values in tally.latencies.values() for v in values]
    if everything:
        latency["all"] = _percentiles(everything)
    return LoadReport(
        clients=clients,
        seconds=tally.seconds,
        requests=len(everything),
        errors=dict(tally.errors),
        acked=tally.acked,
        latency_ms=latency,
    )


@dataclass
class LoadTest:
    """A load run against a standalone server, with its one-client baseline and the count.

    Attributes:
        baseline: One client, same mix, measured first in the same run.
        load: All the clients together.
        missing: Acknowledged writes not in the data directory afterwards.
        duplicates: Keys held more than once.
    """

    baseline: LoadReport
    load: LoadReport
    missing: int
    duplicates: int

    def to_json(self) -> dict[str, Any]:
        base, load = self.baseline, self.load
        return {
            "baseline": base.to_json(),
            "load": load.to_json(),
            "throughput_ratio": round(load.throughput / base.throughput, 2)
            if base.throughput
            else 0.0,
            "p99_ratio": round(load.latency_ms["all"]["p99"] / base.latency_ms["all"]["p99"], 2),
            "acknowledged_missing": self.missing,
            "duplicates": self.duplicates,
        }


def load_test(
    workdir: Path,
    clients: int = 64,
    seconds: float = 60.0,
    baseline_seconds: float = 5.0,
    processes: int = 4,
    groups: int = 8,
) -> LoadTest:
    """Start ``hivemem bus serve`` (journal with ``everysec`` fsync), measure one client,
    then ``clients`` together; stop the server and count every acknowledged write."""
    server = ServerProcess(workdir / "data", snapshot_every=50_000, fsync="everysec")
    server.start()
    try:
        with server.admin() as admin:
            solo = _register(admin, server, ["solo"], groups)
            crowd = _register(admin, server, [f"c{i}" for i in range(clients)], groups)
        baseline = run_load(LoadSpec(server.address, solo, baseline_seconds), processes=1)
        load = run_load(LoadSpec(server.address, crowd, seconds, seed=1), processes=processes)
    finally:
        server.stop()
    held = scan_data_dir(server.data_dir, StoreConfig(), "shared", KEY)
    acked = baseline.acked + load.acked
    return LoadTest(
        baseline=baseline,
        load=load,
        missing=sum(1 for k in acked if held[k] == 0),
        duplicates=sum(n - 1 for n in held.values() if n > 1),
    )


def _register(
    admin: MemoryClient, server: ServerProcess, agents: list[str], groups: int
) -> list[tuple[str, str, str]]:
    out = []
    for i, agent in enumerate(agents):
        group = f"g{i % groups}"
        admin.register(agent, [group])
        out.append((agent, server.token(agent), group))
    return out
