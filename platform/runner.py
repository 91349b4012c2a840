"""The run loop: a scenario, a bus, agent hosts on Ray, one row of results per tick.

Embedded default: a local Ray (``ray.init(address="local", num_cpus=...)``) and a bus
server on a thread of this process. With an address (or ``RAY_ADDRESS``): an existing
cluster, the bus as a named Ray actor there. Either way agents live in
:class:`~hivemem.agents.host.AgentHost` actors, and a tick is

1. ``task.observe(t)``, split by host;
2. ``host.step`` on every host at once (recall, act; one bus read per tier per host);
3. ``host.commit`` host after host (one bus write per tier per host), so the bus sees
   the same writes in the same order whatever the number of hosts;
4. ``task.score(t, answers)`` and one JSONL row.

A host that dies is restarted by Ray and the call is made again; hosts keep nothing the
bus does not have.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivemem.agents.base import AgentSpec
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.collector import OLD_OBJECT_FREEZER
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.platform.host_pool import (
    BUS_CHECK_S,
    AgentHosts,
    check_ray_address,
    logged,
    split,
)
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.scenario import Scenario
from hivemem.platform.ticks import TickRows, check_own_columns
from hivemem.scenarios.base import Task
from hivemem.scenarios.calls import (
    headline_of,
    observe_of,
    outcome_kinds_of,
    score_of,
    summary_of,
)

TickCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class RunResult:
    """What a run produced."""

    scenario: str
    seed: int
    hosts: int
    agents: int
    ticks: int
    summary: dict[str, float | None]
    """The task's measures; a measure of questions none of which was asked is None."""
    rows: TickRows
    baseline: dict[str, float | None] | None = None
    seconds: float = 0.0
    out_dir: Path | None = None
    timing: dict[str, float] = field(default_factory=dict)
    host_nodes: list[str] = field(default_factory=list)
    bus_nodes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "hosts": self.hosts,
            "agents": self.agents,
            "ticks": self.ticks,
            "summary": self.summary,
            "baseline": self.baseline,
            "seconds": self.seconds,
            "agent_steps_per_second": self.agents * self.ticks / self.seconds
            if self.seconds
            else 0.0,
            "timing": self.timing,
            "nodes": len(set(self.host_nodes)),
            "bus_nodes": len(set(self.bus_nodes)),
        }


def ensure_ray(address: str | None, num_cpus: int) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; reuse a live one.

    Raises:
        ConfigError: nothing listens at the address (see :func:`check_ray_address`).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
        ray.init(address=address, log_to_driver=False)
    else:
        # address="local" never joins a cluster found on the machine; Ray 2.60 turns on
        # token auth for it and creates the token itself.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


class _Bus:
    """The bus a run uses: embedded (threads here) or named Ray actors, one per shard.

    With ``run.bus_shards`` > 1 the namespaces are spread over that many servers (see
    :mod:`hivemem.memory_bus.sharding`); ``address`` then lists them all, comma-separated,
    and every client routes by namespace. Bus metrics: an unsharded embedded bus adds its
    series to the driver's endpoint (the gauges of several in-process shards would
    overwrite each other, so a sharded embedded bus has none); bus actors each serve their
    own on their node, listed for Prometheus by :func:`write_bus_targets`.
    """

    def __init__(
        self, scenario: Scenario, remote: bool, run_id: str, oracle: Any, metrics: Any = None
    ) -> None:
        from hivemem.memory_bus.auth import new_secret, token_for
        from hivemem.memory_bus.protocol import ADMIN_AGENT

        config = scenario.store_config()
        shards = scenario.run.bus_shards
        self.actors: list[Any] = []
        self.nodes: list[str] = []  # the Ray node of each bus actor
        self._group: Any = None  # the bus actors' placement group, if any
        self.servers: list[BusServer] = []
        self.targets: Path | None = None
        secret = new_secret()
        try:  # what started is stopped if the rest fails (a placement group outlived it)
            if remote:
                from hivemem.memory_bus.ray_actor import start_bus_shards

                self.actors, found, self._group = start_bus_shards(
                    config,
                    secret,
                    shards,
                    name=f"hivemem-bus-{run_id}",
                    metrics=scenario.metrics_port is not None,
                    spin_us=scenario.run.bus_spin_us,
                )
                addresses = [f["address"] for f in found]
                self.nodes = [f["node"] for f in found]
                self.targets = write_bus_targets(scenario.name, run_id, found)
            else:
                bus_metrics = metrics.bus() if metrics is not None and shards == 1 else None
                for i in range(shards):
                    store = MemoryStore(config).as_shard(i, shards)
                    if oracle is not None:
                        store.set_oracle(oracle)
                    server = BusServer(
                        store,
                        secret=secret,
                        metrics=bus_metrics,
                        spin_us=scenario.run.bus_spin_us,
                        freeze_old_objects=scenario.run.freeze_old_objects,
                    )
                    self.servers.append(server.start())
                addresses = [s.address for s in self.servers]
                self.nodes = ["driver"] * shards  # in this process
            self.address = ",".join(addresses)
            self.admin = MemoryClient(self.address, ADMIN_AGENT, token_for(secret, ADMIN_AGENT))
        except BaseException:
            self.close()
            raise

    def register(self, specs: list[AgentSpec]) -> dict[str, str]:
        """Register every agent, up to 1,000 requests in flight (100,000 round trips one
        by one take a minute)."""
        sending = self.admin.nowait()
        tokens: dict[str, str] = {}
        for start in range(0, len(specs), 1_000):
            window = specs[start : start + 1_000]
            replies = [sending.register(s.agent_id, list(s.groups), s.role) for s in window]
            tokens.update(
                (s.agent_id, r.result()["token"]) for s, r in zip(window, replies, strict=True)
            )
        return tokens

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin.stats()
        return result

    def check_alive(self) -> None:
        """Raise at once if a server of the bus is gone: hosts waiting on a dead bus only
        fail after their clients' timeouts and retries (minutes).

        A bus actor that does not answer within :data:`BUS_CHECK_S` is taken as busy,
        not dead; only Ray's word that it died counts.

        Raises:
            HivememError: a bus actor died, or an embedded server stopped.
        """
        for i, server in enumerate(self.servers):
            if not server.serving:
                raise HivememError(f"the bus server (shard {i}) stopped", shard=i)
        if not self.actors:
            return
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        refs = [a.pid.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=BUS_CHECK_S)
        for i, ref in enumerate(refs):
            if ref in ready:
                try:
                    ray.get(ref)
                except ActorUnavailableError:  # unreachable for a moment: busy, not dead
                    continue
                except RayActorError as exc:
                    raise HivememError(
                        f"bus actor {i} (shard {i} of {len(refs)}) died: the run cannot go on",
                        shard=i,
                    ) from exc

    def close(self) -> None:
        """Stop every server and bus actor; never raises (failures are logged), so a
        dead shard neither stops the cleanup of the rest nor hides the run's own error.

        Kills, the placement group's release and the Prometheus targets file's removal
        always happen: a targets file left behind keeps ``HivememBusDown`` firing.
        """
        try:
            admin = getattr(self, "admin", None)  # (none if the bus failed to start)
            if admin is not None:
                logged("closing the admin client", admin.close)
            for server in self.servers:
                logged("stopping a bus server", server.stop)
            if self.actors:
                _stop_actors(self.actors)
        finally:
            if self.actors:
                import ray
                from hivemem.memory_bus.ray_actor import remove_placement

                for actor in self.actors:
                    logged("killing a bus actor", ray.kill, actor, no_restart=True)
                logged("removing the bus placement group", remove_placement, self._group)
            if self.targets is not None:
                logged("removing the Prometheus targets file", self.targets.unlink, missing_ok=True)


STOP_WAIT_S = 10.0
"""Seconds a closing run waits for each bus actor to stop (and flush its journal) before
killing it."""


def _stop_actors(actors: list[Any]) -> None:
    """Ask every actor to stop at once and wait for each in turn (at most
    :data:`STOP_WAIT_S`), logging those that failed: one dead actor must not leave the
    others serving."""
    import ray

    refs = [a.stop.remote() for a in actors]
    for i, ref in enumerate(refs):
        logged(f"stopping bus actor {i}", ray.get, ref, timeout=STOP_WAIT_S)


BUS_TARGETS_DIR = Path(tempfile.gettempdir()) / "hivemem" / "prom_bus_targets"
"""Prometheus file-discovery targets of bus actors, one JSON file per run (see
``deploy/observability/prometheus.yml``): a bus on a cluster listens on whatever node Ray
placed it, so its address cannot be written in the config."""


def write_bus_targets(
    scenario: str, run_id: str, found: list[dict[str, str]], directory: Path = BUS_TARGETS_DIR
) -> Path | None:
    """Write the ``/metrics`` addresses of a run's bus actors for Prometheus to discover,
    as ``<driver pid>-<run id>.json``, first removing the files of drivers that are gone.

    A run removes its file when it closes; a driver killed with SIGKILL cannot, and its
    file kept ``HivememBusDown`` firing for bus actors that died with the run.
    """
    targets = [f["metrics"] for f in found if f.get("metrics")]
    if not targets:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    _remove_dead_drivers_targets(directory)
    path = directory / f"{os.getpid()}-{run_id}.json"
    doc = [{"targets": targets, "labels": {"scenario": scenario}}]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)  # Prometheus never reads a half-written file
    return path


def _remove_dead_drivers_targets(directory: Path) -> None:
    """Remove the targets files (``<pid>-<run id>.json``) whose driver process is gone.

    Files are local to the driver's machine (Prometheus runs there), so the pid is one of
    its processes; a file of another user's live driver is kept (PermissionError)."""
    for path in directory.glob("*-*.json"):
        pid = path.name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            logged("removing a dead driver's Prometheus targets file", path.unlink, missing_ok=True)
        except OSError:
            continue  # alive, another user's


def _add(into: dict[str, float], parts: dict[str, Any]) -> None:
    for k, v in parts.items():
        into[k] = into.get(k, 0.0) + float(v)


def run_once(
    scenario: Scenario,
    *,
    baseline: bool = False,
    remote: bool = False,
    hosts: int | None = None,
    on_tick: TickCallback | None = None,
    hooks: dict[str, Any] | None = None,
    metrics: DriverMetrics | None = None,
    host_pool: Callable[..., Any] | None = None,
    rows: TickRows | None = None,
    task: Task | None = None,
) -> RunResult:
    """Run the scenario once and return the per-tick rows and summary.

    Each tick's row is appended to ``rows`` as the tick ends (a fresh
    :class:`~hivemem.platform.ticks.TickRows` if None): give it one that writes to a
    file, and a run that stops early leaves every tick it finished there.

    Ray must be up, unless ``host_pool`` builds the hosts some other way: it is called
    like ``AgentHosts(blocks, address, tokens, dim, run_id, embedder=...)`` and must offer the same
    ``step``/``commit``/``close``/``restarts``/``nodes`` (RL training runs the agent
    hosts in-process this way: :class:`~hivemem.platform.host_pool.LocalHosts`). While
    it runs, this process freezes what outlives a full garbage collection as
    ``run.freeze_old_objects`` says (:class:`~hivemem.memory_bus.collector.OldObjectFreezer`):
    a task of many agents keeps many objects, and an embedded bus keeps every item.

    ``task`` is the task to run, built from the scenario with ``baseline`` (None:
    ``scenario.make_task(baseline)``); the plug-in checks (:mod:`hivemem.platform.testing`)
    hand one that checks each answer as the run gets it.
    """
    with OLD_OBJECT_FREEZER.holding(scenario.run.freeze_old_objects):
        if task is None:
            task = scenario.make_task(baseline)
        return _run_once(scenario, task, remote, hosts, on_tick, hooks, metrics, host_pool, rows)


def _run_once(
    scenario: Scenario,
    task: Task,
    remote: bool,
    hosts: int | None,
    on_tick: TickCallback | None,
    hooks: dict[str, Any] | None,
    metrics: DriverMetrics | None,
    host_pool: Callable[..., Any] | None,
    rows: TickRows | None,
) -> RunResult:
    hooks = hooks or {}
    rows = TickRows() if rows is None else rows
    specs = task.roster
    family, agent_ids = scenario.task.family, frozenset(s.agent_id for s in specs)
    n_hosts = max(1, min(hosts or scenario.host_count(), len(specs)))
    run_id = uuid.uuid4().hex[:8]
    uses_oracle = bool(scenario.memory.oracle_tiers())
    if uses_oracle and remote:
        raise HivememError(
            "the oracle eviction policy needs the embedded bus (it reads the task's future)"
        )
    bus = _Bus(scenario, remote, run_id, task.next_use if uses_oracle else None, metrics)
    name = scenario.name
    if metrics is not None:
        metrics.agents.labels(name).set(len(specs))
    pool: AgentHosts | None = None
    try:
        tokens = bus.register(specs)
        pool = (host_pool or functools.partial(AgentHosts, bus_alive=bus.check_alive))(
            split(specs, n_hosts),
            bus.address,
            tokens,
            scenario.memory.dim,
            run_id,
            embedder=scenario.memory.embedder,
        )
        totals: dict[str, float] = {}
        timing = {
            "step": 0.0,
            "commit": 0.0,
            "bus_read": 0.0,
            "bus_write": 0.0,
            "host_compute": 0.0,
            "task": 0.0,
        }
        started = time.perf_counter()
        restarts_seen = 0
        for t in range(scenario.run.ticks):
            if "before_tick" in hooks:
                hooks["before_tick"](t, pool)
            t0 = time.perf_counter()
            obs = observe_of(task, family, t, agent_ids)
            t1 = time.perf_counter()
            stepped = pool.step(t, obs)
            if "before_commit" in hooks:
                hooks["before_commit"](t, pool)
            t2 = time.perf_counter()
            committed = pool.commit(t)
            t3 = time.perf_counter()
            answers: dict[str, Any] = {}
            for r in stepped:
                answers.update(r["answers"])
            parts = score_of(task, family, t, answers)
            check_own_columns(family, parts)
            _add(totals, parts)
            t4 = time.perf_counter()
            timing["task"] += (t1 - t0) + (t4 - t3)
            timing["step"] += t2 - t1
            timing["commit"] += t3 - t2
            row: dict[str, Any] = {"t": t, **{k: float(v) for k, v in parts.items()}}
            row["score"] = summary_of(task, family, totals)["score"]
            ops: dict[str, float] = {}
            evicted: dict[str, float] = {}
            for kind, results in (("read", stepped), ("write", committed)):
                for r in results:
                    st = r["stats"]
                    timing[f"bus_{kind}"] += st["bus_seconds"]
                    timing["host_compute"] += st["compute_seconds"]
                    _add(ops, st["ops"])
                    _add(evicted, st["evicted"])
                    for k in ("recalls", "hits", "writes", "promotions"):
                        row[k] = row.get(k, 0) + st[k]
            row["ops"] = ops
            row["evicted"] = evicted
            stats = bus.stats()
            row["items"] = {tier: s["items"] for tier, s in stats.items()}
            rows.append(row)
            if metrics is not None:
                metrics.ticks.labels(name).inc()
                metrics.tick_seconds.labels(name).observe(time.perf_counter() - t0)
                metrics.agent_steps.labels(name).inc(len(obs))
                if row["score"] is not None:  # None: nothing asked yet
                    metrics.score.labels(name).set(row["score"])
                metrics.progress.labels(name).set((t + 1) / scenario.run.ticks)
                metrics.restarts.labels(name).inc(pool.restarts - restarts_seen)
                correct, questions = headline_of(task, family, parts)
                metrics.record_memory(
                    name,
                    outcome_kinds_of(task, family, parts),
                    row,
                    correct=correct,
                    questions=questions,
                )
                restarts_seen = pool.restarts
            if on_tick is not None:
                on_tick(t, row)
        seconds = time.perf_counter() - started
        timing["host_restarts"] = float(pool.restarts)
        return RunResult(
            scenario=scenario.name,
            seed=scenario.run.seed,
            hosts=n_hosts,
            agents=len(specs),
            ticks=scenario.run.ticks,
            summary=summary_of(task, family, totals),
            rows=rows,
            seconds=seconds,
            timing=timing,
            host_nodes=pool.nodes,
            bus_nodes=bus.nodes,
        )
    finally:
        # logged, not raised: a failing cleanup must not replace the run's own error
        if pool is not None:
            logged("closing the agent hosts", pool.close)
        bus.close()
