"""SIGKILL a standalone bus server under write load, again and again; count what survived.

Writers (threads, each with its own connection and client id) write items with a unique
key in ``meta`` and retry each write with the same request id until it is acknowledged,
across the kill and the restart. So every write is acknowledged exactly once, and the
bus must hold exactly one item per key: a write lost in the crash shows as a missing
key, one applied twice (the retry not recognised after the restart) as a duplicate.

Used by ``benchmarks/kill_cycles.py`` (20 cycles) and the test suite (3).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.testing.server_process import ServerProcess, scan_data_dir

KEY = "key"
"""The meta field that holds a write's unique key."""


@dataclass
class Writer:
    """One writing client: its agent and the keys the bus acknowledged.

    ``dim``: write random unit vectors of this dimension (seeded by the agent); 0 leaves
    the embedding to the bus. (Before the hashing embedder hashed each word into four
    coordinates, it gave some of these texts the same vector, and ``dedup`` merged them.)
    """

    agent: str
    token: str
    dim: int = 0
    acked: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    retried: int = 0
    """Writes that outlived a reply timeout, so were sent again (across a kill)."""

    def run(self, address: str, stop: threading.Event, retries: int) -> None:
        """Write until ``stop``; each write retried (same request id) until acknowledged."""
        timeout = 0.5
        with MemoryClient(
            address, self.agent, self.token, timeout=timeout, retries=retries
        ) as client:
            n = 0
            rng = np.random.default_rng(int.from_bytes(self.agent.encode(), "little"))
            while not stop.is_set():
                key = f"{self.agent}:{n}"
                vector = None
                if self.dim:
                    vector = rng.standard_normal(self.dim).astype(np.float32)
                    vector /= np.linalg.norm(vector)
                item = NewItem(f"{self.agent} fact {n}", vector=vector, meta={KEY: key})
                began = time.monotonic()
                try:
                    client.write("private", self.agent, item, now=float(n))
                except HivememError:
                    self.gave_up.append(key)  # the server stayed away longer than the retries
                else:
                    self.acked.append(key)
                    self.retried += time.monotonic() - began > timeout
                n += 1


@dataclass
class CycleReport:
    """What the cycles did and what the data directory held afterwards."""

    cycles: int
    writers: int
    acked: int
    gave_up: int
    retried: int
    missing: int
    duplicates: int
    unacked_present: int
    restart_seconds: list[float]
    acked_per_cycle: list[int]

    def ok(self) -> bool:
        """Every acknowledged write present exactly once."""
        return self.missing == 0 and self.duplicates == 0

    def to_json(self) -> dict[str, Any]:
        restarts = sorted(self.restart_seconds)
        return {
            "cycles": self.cycles,
            "writers": self.writers,
            "acknowledged_writes": self.acked,
            "writes_given_up": self.gave_up,
            "writes_resent_across_a_kill": self.retried,
            "acknowledged_missing": self.missing,
            "duplicates": self.duplicates,
            "unacknowledged_present": self.unacked_present,
            "restart_seconds_median": restarts[len(restarts) // 2] if restarts else 0.0,
            "restart_seconds_max": restarts[-1] if restarts else 0.0,
            "acknowledged_per_cycle_min": min(self.acked_per_cycle, default=0),
        }


def kill_cycles(
    workdir: Path,
    cycles: int,
    writers: int = 4,
    load_seconds: tuple[float, float] = (0.5, 1.5),
    snapshot_every: int = 500,
    seed: int = 0,
    spin_us: int | None = None,
    config: Path | None = None,
    vectors: int = 0,
    fsync: str = "no",
) -> CycleReport:
    """``cycles`` times: write from ``writers`` clients, SIGKILL the server at a random
    moment, restart it on the same data directory. The writers keep going across each
    kill (their retries wait for the restart). Then count every item by key. ``spin_us``
    is the server's busy polling (``--spin-us``; None: the command's default), ``config``
    its store config file; ``vectors`` the dimension of the random vectors the writers
    send (0: none, the bus embeds the texts; see :class:`Writer`). With a write policy
    that reads neighbours (``dedup``) and vectors, every write's decision is journaled
    and played back across the kills. ``fsync`` is the journal's policy (``always``:
    the server commits in groups)."""
    rng = random.Random(seed)
    server = ServerProcess(
        workdir / "data",
        snapshot_every=snapshot_every,
        spin_us=spin_us,
        config=config,
        fsync=fsync,
    )
    restarts = [server.start()]
    crew = [Writer(f"w{i}", server.token(f"w{i}"), vectors) for i in range(writers)]
    stop = threading.Event()
    # retries cover a restart (about a second or two) many times over
    threads = [
        threading.Thread(target=w.run, args=(server.address, stop, 120), daemon=True) for w in crew
    ]
    for t in threads:
        t.start()
    per_cycle = []
    try:
        for _ in range(cycles):
            before = sum(len(w.acked) for w in crew)
            time.sleep(rng.uniform(*load_seconds))
            server.kill()
            restarts.append(server.start())
            per_cycle.append(sum(len(w.acked) for w in crew) - before)
        time.sleep(load_seconds[0])  # the writers' pending retries land
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        server.stop()
    store_config = StoreConfig.model_validate(yaml.safe_load(config.read_text()) or {}) if config else StoreConfig()  # fmt: skip
    return _count(server, store_config, crew, cycles, restarts, per_cycle)


def _count(
    server: ServerProcess,
    store_config: StoreConfig,
    crew: list[Writer],
    cycles: int,
    restarts: list[float],
    per_cycle: list[int],
) -> CycleReport:
    held = scan_data_dir(server.data_dir, store_config, "private", KEY)
    acked = Counter(k for w in crew for k in w.acked)
    return CycleReport(
        cycles=cycles,
        writers=len(crew),
        acked=sum(acked.values()),
        gave_up=sum(len(w.gave_up) for w in crew),
        retried=sum(w.retried for w in crew),
        missing=sum(1 for k in acked if held[k] == 0),
        duplicates=sum(n - 1 for n in held.values() if n > 1),
        unacked_present=sum(1 for k in held if k not in acked),
        restart_seconds=restarts[1:],
        acked_per_cycle=per_cycle,
    )
