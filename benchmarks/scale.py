"""Agents at scale: agent-steps per second for 100, 1,000 and 10,000 agents on Ray.

An agent-step is one agent's tick: one recall (``search``) and one write through the
bus. The shape is ``capacity_stream`` with one fact a tick per agent (every agent asks
one question and writes one fact each tick, into its private namespace) and a private
capacity of 4 items, so from the sixth tick or so every write also evicts. Each size
runs through the real run loop (``run_once``: a local Ray with ``num_cpus=2``, agent
hosts as Ray actors, the bus on a thread of this process); the first ticks are warm-up
and the rest are timed.

Baselines measured in the same run:
  - the smallest size: cost per agent-step at each size divided by the cost at 100 agents;
  - the bus floor: the same searches and writes, batched the same way, sent by one
    client in this process straight to a fresh bus (no Ray, no agents, no task; the
    queries and items are built and embedded before the clock starts).

Where the time goes comes from CPU time (``/proc``) over the timed ticks: the bus
thread, the host processes, the rest of this (driver) process and everything else on
the machine (Ray's own daemons), each per agent-step.

    python benchmarks/scale.py --quick     # under a minute
    python benchmarks/scale.py             # more ticks
    python benchmarks/scale.py --quick --shards 1,2,4      # bus as 1, 2, 4 Ray actors
    python benchmarks/scale.py --cluster 4 --sizes 1000,100000   # 4-node local cluster

``--shards`` runs 10,000 agents with the bus as 1, 2 and 4 named Ray actors (separate
processes; shards on threads of one process would share its interpreter lock) and
prints steps/s against 1 shard. ``--cluster N`` starts an N-node
``ray.cluster_utils.Cluster`` on this machine and runs each size there with the bus as
``--cluster-shards`` actors, printing steps/s, cost per step against the first size, and
the resident memory of the hosts and bus shards per agent. ``--json`` keeps the results
for ``benchmarks/growth.py --plot``.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivemem.agents.base import make_agent
from hivemem.agents.batches import hit_bytes, new_item, request_batches
from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient, OnBehalf, encode_write_entries
from hivemem.memory_bus.embedder import make_embedder
from hivemem.memory_bus.interfaces import Embedder
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.platform.host_pool import split
from hivemem.platform.runner import ensure_ray, run_once
from hivemem.platform.scenario import Scenario, load_scenario
from proc_cpu import cpu_of, machine_cpu

SHAPE = ["task.params.facts_per_tick=1", "memory.private.capacity=4"]
SIZES = (100, 1_000, 10_000)
TICKS = {"quick": {100: 60, 1_000: 20, 10_000: 9}, "full": {100: 200, 1_000: 60, 10_000: 24}}
WARM = {"quick": 3, "full": 8}
SECRET = b"scale-benchmark-secret"


# --- CPU accounting (/proc) -------------------------------------------------------------


def _bus_thread_id() -> int | None:
    for thread in threading.enumerate():
        if thread.name == "hivemem-bus":
            return thread.native_id
    return None


class GcClock:
    """Seconds this (driver) process spends in the cyclic garbage collector, any thread."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


GC = GcClock()


@dataclass
class CpuClock:
    """CPU counters of the run's parts, read twice around the timed ticks."""

    host_pids: list[int]
    bus_tid: int | None
    start: dict[str, float] = field(default_factory=dict)

    def read(self) -> dict[str, float]:
        bus = cpu_of(f"/proc/self/task/{self.bus_tid}/stat") if self.bus_tid else 0.0
        return {
            "bus": bus,
            "hosts": sum(cpu_of(f"/proc/{pid}/stat") for pid in self.host_pids),
            "driver": cpu_of("/proc/self/stat") - bus,
            "machine": machine_cpu()[0],
            "gc": GC.seconds,
            "wall": time.perf_counter(),
        }

    def begin(self) -> None:
        self.start = self.read()

    def since(self) -> dict[str, float]:
        end = self.read()
        out = {k: end[k] - self.start[k] for k in end}
        out["ray_and_other"] = out.pop("machine") - out["bus"] - out["hosts"] - out["driver"]
        return out


# --- one size through the run loop ------------------------------------------------------


@dataclass
class SizeResult:
    agents: int
    hosts: int
    ticks: int
    steps: int
    cpu: dict[str, float]
    timing: dict[str, float]
    seconds: float
    recalls: float
    writes: float
    shards: int = 1
    rss: dict[str, float] = field(default_factory=dict)

    @property
    def us_per_step(self) -> float:
        return 1e6 * self.cpu["wall"] / self.steps

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.cpu["wall"]


def scenario_for(agents: int, ticks: int, agents_per_host: int, shards: int = 1) -> Scenario:
    return load_scenario(
        "capacity_stream",
        [
            *SHAPE,
            f"agents.0.count={agents}",
            f"run.ticks={ticks}",
            f"run.agents_per_host={agents_per_host}",
            f"run.bus_shards={shards}",
        ],
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of a process on this machine (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bus_pids() -> list[int]:
    """The processes of the bus actors alive now (all nodes run on this machine)."""
    import ray

    named = ray.util.list_named_actors(all_namespaces=True)
    actors = [
        ray.get_actor(a["name"], namespace=a["namespace"])
        for a in named
        if a["name"].startswith("hivemem-bus-")
    ]
    return [int(pid) for pid in ray.get([a.pid.remote() for a in actors])]


def run_size(
    agents: int, ticks: int, warm: int, agents_per_host: int, shards: int = 1, remote: bool = False
) -> SizeResult:
    import ray

    scenario = scenario_for(agents, ticks, agents_per_host, shards)
    clock: list[CpuClock] = []
    rss: dict[str, float] = {}

    def before_tick(t: int, pool: Any) -> None:
        if t == warm:
            pids = [info["pid"] for info in ray.get([h.info.remote() for h in pool.handles])]
            clock.append(CpuClock(pids, _bus_thread_id()))
            clock[0].begin()

    cpu: dict[str, float] = {}
    timed: list[dict[str, Any]] = []

    def on_tick(t: int, row: dict[str, Any]) -> None:
        if t >= warm:
            timed.append(row)
        if t == ticks - 1:
            cpu.update(clock[0].since())
            rss["hosts"] = sum(rss_bytes(pid) for pid in clock[0].host_pids)
            rss["bus"] = sum(rss_bytes(pid) for pid in bus_pids()) if remote else 0.0

    result = run_once(scenario, remote=remote, on_tick=on_tick, hooks={"before_tick": before_tick})
    return SizeResult(
        agents=agents,
        hosts=result.hosts,
        ticks=ticks,
        steps=agents * (ticks - warm),
        cpu=cpu,
        timing=result.timing,
        seconds=result.seconds,
        recalls=sum(r["recalls"] for r in timed),
        writes=sum(r["writes"] for r in timed),
        shards=shards,
        rss=rss,
    )


# --- the bus floor: the same traffic without Ray, agents or task -------------------------


def _traffic(t: int, obs: dict[str, Any], agents: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The recalls and writes the agents make at ``t``, as (agent, Recall|Proposal)."""
    recalls, writes = [], []
    for aid, o in obs.items():
        plans = agents[aid].plan(t, o)
        recalls += [(aid, r) for r in plans]
        action = agents[aid].act(t, o, [[] for _ in plans])
        writes += [(aid, w) for w in action.writes]
    return recalls, writes


def bus_floor(agents: int, ticks: int, warm: int, agents_per_host: int) -> float:
    """Seconds the bus alone takes for the timed ticks' traffic, batched as hosts batch it."""
    scenario = scenario_for(agents, ticks, agents_per_host)
    task = scenario.make_task()
    specs = task.roster
    server = BusServer(
        MemoryStore(scenario.memory.model_copy(update={"seed": scenario.run.seed})), secret=SECRET
    )
    for spec in specs:
        server.register(spec.agent_id, list(spec.groups), spec.role)
    server.start()
    client = MemoryClient(server.address, timeout=600)
    embed = make_embedder(scenario.memory.embedder, scenario.memory.dim)
    members = [{s.agent_id for s in block} for block in split(specs, scenario.host_count())]
    built = {s.agent_id: make_agent(s) for s in specs}
    behalf = {s.agent_id: OnBehalf(s.agent_id, token_for(SECRET, s.agent_id)) for s in specs}
    # as a host asks: hits without vectors unless an agent wants them, replies kept small
    vectors = any(getattr(a, "hit_vectors", True) for a in built.values())
    hit_size = hit_bytes(scenario.memory.dim, vectors)
    elapsed = 0.0
    try:
        for t in range(ticks):
            obs = task.observe(t)
            per_host = [_traffic(t, {a: obs[a] for a in obs if a in m}, built) for m in members]
            requests = [_requests(r, w, embed, behalf, hit_size) for r, w in per_host]
            started = time.perf_counter()
            for searches, _ in requests:
                for tier, queries in searches:
                    _sender(client, queries[0][4]).search_many(
                        tier, queries, now=t, vectors=vectors
                    )
            for _, writes in requests:
                for tier, sender, items in writes:
                    _sender(client, sender).write_many_encoded(tier, items, now=t)
            if t >= warm:
                elapsed += time.perf_counter() - started
    finally:
        client.close()
        server.stop()
    return elapsed


def _sender(client: MemoryClient, who: OnBehalf) -> MemoryClient:
    """As the host does: a request goes out as its first entry's agent."""
    return client.as_agent(who.agent, who.token)


def _requests(
    recalls: list[Any],
    writes: list[Any],
    embed: Embedder,
    behalf: dict[str, OnBehalf],
    hit_size: int,
) -> tuple[list[Any], list[Any]]:
    searches: list[Any] = []
    if recalls:
        vectors = embed([r.query for _, r in recalls])
        queries = [
            (r.tier, (r.namespace, v, r.k, r.as_of, behalf[a]))
            for (a, r), v in zip(recalls, vectors, strict=True)
        ]
        searches = request_batches(queries, cost=lambda q: q[2] * hit_size)
    entries: list[Any] = []
    if writes:
        vectors = embed([w.text for _, w in writes])
        items = [
            (w.tier, (w.namespace, new_item(w, v), behalf[a]))
            for (a, w), v in zip(writes, vectors, strict=True)
        ]
        entries = [
            (tier, chunk[0][2], encode_write_entries(chunk))
            for tier, chunk in request_batches(items)
        ]
    return searches, entries


# --- report ------------------------------------------------------------------------------


def report(results: list[SizeResult], floors: dict[int, float], mode: str) -> None:
    base = results[0]
    print(f"agents at scale ({mode}): capacity_stream, one recall and one write per agent-step")
    print(f"{'agents':>7} {'hosts':>5} {'steps/s':>9} {'us/step':>8} {'vs ' + str(base.agents):>7}"
          f" {'floor us':>8} {'vs floor':>8}")  # fmt: skip
    for r in results:
        floor_us = 1e6 * floors[r.agents] / r.steps
        print(f"{r.agents:7d} {r.hosts:5d} {r.steps_per_s:9,.0f} {r.us_per_step:8.1f}"
              f" {r.us_per_step / base.us_per_step:7.2f} {floor_us:8.1f} {r.us_per_step / floor_us:8.2f}")  # fmt: skip
    print("\nwhere the time goes, timed ticks: CPU us per agent-step (2 cores: at most 2x wall)")
    print(f"{'agents':>7} {'bus':>6} {'hosts':>6} {'driver':>6} {'(gc)':>6} {'ray+':>6} {'wall':>6}"
          f" | wall share, whole run: {'step':>5} {'commit':>6} {'task':>5} {'other':>5}")  # fmt: skip
    for r in results:
        cpu = {k: 1e6 * v / r.steps for k, v in r.cpu.items()}
        share = {k: r.timing[k] / r.seconds for k in ("step", "commit", "task")}
        other = 1.0 - sum(share.values())
        print(f"{r.agents:7d} {cpu['bus']:6.1f} {cpu['hosts']:6.1f} {cpu['driver']:6.1f}"
              f" {cpu['gc']:6.1f} {cpu['ray_and_other']:6.1f} {cpu['wall']:6.1f} | {'':23}"
              f" {share['step']:5.2f} {share['commit']:6.2f} {share['task']:5.2f} {other:5.2f}")  # fmt: skip
    for r in results:
        per = 1e6 / (r.agents * r.ticks)
        t = r.timing
        print(f"  {r.agents:>6} agents, whole run, summed over hosts: bus wait"
              f" {per * (t['bus_read'] + t['bus_write']):.1f} us, host compute"
              f" {per * t['host_compute']:.1f} us per agent-step; timed ticks:"
              f" {r.recalls / r.steps:.2f} recalls, {r.writes / r.steps:.2f} writes per agent-step")  # fmt: skip
    print()
    for r in results:
        print(f"steps_per_s_{r.agents}: {r.steps_per_s:.0f}")
    for r in results[1:]:
        print(f"cost_per_step_{r.agents}_vs_{base.agents}: {r.us_per_step / base.us_per_step:.2f}")
    for r in results:
        floor_us = 1e6 * floors[r.agents] / r.steps
        print(f"cost_per_step_{r.agents}_vs_bus_floor: {r.us_per_step / floor_us:.2f}")


# --- bus shards and the multi-node cluster -----------------------------------------------


def shard_curve(
    agents: int, ticks: int, warm: int, agents_per_host: int, shards: list[int]
) -> None:
    """The same run with the bus as 1, 2, 4... Ray actors (processes); ratios vs 1 shard."""
    run_once(scenario_for(min(agents, 1_000), 6, agents_per_host, max(shards)), remote=True)
    results = [run_size(agents, ticks, warm, agents_per_host, n, remote=True) for n in shards]
    base = results[0]
    print(f"bus shards: {agents:,} agents, {base.hosts} hosts, bus shards as Ray actors")
    print(f"{'shards':>6} {'steps/s':>9} {'us/step':>8} {'vs ' + str(base.shards):>6}")
    for r in results:
        print(f"{r.shards:6d} {r.steps_per_s:9,.0f} {r.us_per_step:8.1f}"
              f" {r.steps_per_s / base.steps_per_s:6.2f}")  # fmt: skip
    print()
    for r in results[1:]:
        print(f"steps_per_s_{r.shards}_shards_vs_1: {r.steps_per_s / base.steps_per_s:.2f}")


def start_cluster(nodes: int) -> Any:
    """``nodes`` Ray nodes on this machine (``ray.cluster_utils.Cluster``), 1 CPU each.

    The nodes use this machine's interface address (Ray's default; a node pinned to
    127.0.0.1 leaves drivers unable to reach its pubsub). Nothing leaves the machine.
    """
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1}
    cluster = Cluster(
        initialize_head=True, connect=False, head_node_args={**node, "include_dashboard": False}
    )
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def cluster_run(
    sizes: list[int], ticks: int, warm: int, agents_per_host: int, nodes: int, shards: int
) -> list[SizeResult]:
    """Each size on a ``nodes``-node cluster, bus as ``shards`` actors; ratios vs the first."""
    cluster = start_cluster(nodes)
    try:
        ensure_ray(cluster.address, num_cpus=0)
        results = [run_size(n, ticks, warm, agents_per_host, shards, remote=True) for n in sizes]
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    base = results[0]
    print(
        f"{nodes}-node cluster: bus as {shards} shard actors, {agents_per_host:,} agents per host"
    )
    print(f"{'agents':>7} {'hosts':>5} {'steps/s':>9} {'us/step':>8} {'vs ' + str(base.agents):>8}"
          f" {'hosts MiB':>9} {'bus MiB':>8} {'KiB/agent':>9}")  # fmt: skip
    for r in results:
        kib = (r.rss["hosts"] + r.rss["bus"]) / 1024 / r.agents
        print(f"{r.agents:7d} {r.hosts:5d} {r.steps_per_s:9,.0f} {r.us_per_step:8.1f}"
              f" {r.us_per_step / base.us_per_step:8.2f} {r.rss['hosts'] / 2**20:9,.0f}"
              f" {r.rss['bus'] / 2**20:8,.0f} {kib:9.1f}")  # fmt: skip
    print()
    for r in results[1:]:
        grown = r.rss["hosts"] + r.rss["bus"] - base.rss["hosts"] - base.rss["bus"]
        print(f"cluster_cost_per_step_{r.agents}_vs_{base.agents}:"
              f" {r.us_per_step / base.us_per_step:.2f}")  # fmt: skip
        print(f"cluster_steps_per_s_{r.agents}: {r.steps_per_s:.0f}")
        print(f"cluster_memory_per_added_agent_kib: {grown / 1024 / (r.agents - base.agents):.1f}")
    return results


def save(path: Path, label: str, results: list[SizeResult]) -> None:
    """Add these results (per size: us and steps/s, RSS) to the JSON file at ``path``."""
    import json

    data = json.loads(path.read_text()) if path.exists() else {}
    data[label] = [
        {
            "agents": r.agents,
            "shards": r.shards,
            "hosts": r.hosts,
            "us_per_step": r.us_per_step,
            "steps_per_s": r.steps_per_s,
            "rss": r.rss,
        }
        for r in results
    ]
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer ticks: under a minute")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--agents-per-host", type=int, default=5_000)
    parser.add_argument("--shards", help="e.g. 1,2,4: the shard curve instead of the sizes")
    parser.add_argument("--shard-agents", type=int, default=10_000)
    parser.add_argument("--cluster", type=int, metavar="NODES", help="sizes on a local cluster")
    parser.add_argument("--cluster-shards", type=int, default=4)
    parser.add_argument("--cluster-ticks", type=int, default=6)
    parser.add_argument("--json", type=Path, help="add the results to this JSON file")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    sizes = [int(s) for s in args.sizes.split(",")]
    ticks = TICKS[mode]
    warm = WARM[mode]
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    if args.cluster:
        found = cluster_run(
            sizes, args.cluster_ticks, 2, args.agents_per_host, args.cluster, args.cluster_shards
        )
        if args.json:
            save(args.json, f"cluster{args.cluster}", found)
        return
    ensure_ray(None, num_cpus=2)
    if args.shards:
        n_ticks = ticks.get(args.shard_agents, ticks[max(ticks)])
        shards = [int(s) for s in args.shards.split(",")]
        shard_curve(args.shard_agents, n_ticks, warm, args.agents_per_host, shards)
        return
    # A fresh Ray spends its first seconds starting worker processes: run a small
    # scenario untimed so that the first size is not measured against that.
    run_once(scenario_for(min(sizes), 10, args.agents_per_host))
    results, floors = [], {}
    for n in sizes:
        n_ticks = ticks.get(n, ticks[max(ticks)])
        results.append(run_size(n, n_ticks, warm, args.agents_per_host))
        floors[n] = bus_floor(n, n_ticks, warm, args.agents_per_host)
    report(results, floors, mode)
    if args.json:
        save(args.json, "embedded", results)


if __name__ == "__main__":
    main()
