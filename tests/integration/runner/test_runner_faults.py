"""A run whose bus or hosts fail: it fails at once, with its own error, and leaves
nothing behind (no actors, no placement groups, no Prometheus targets file)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from hivemem.memory_bus.errors import HivememError
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.runner import BUS_TARGETS_DIR, run_once
from hivemem.platform.scenario import load_scenario

UNBUILDABLE = "hivemem.agents.testing:UnbuildableAgent"

pytestmark = pytest.mark.usefixtures("ray_session")


def _named_actors(prefix: str) -> list[str]:
    """The live named actors whose name starts with ``prefix``, once kills settled."""
    import ray

    deadline = time.monotonic() + 10
    while True:
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(prefix)
        ]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def _kill_bus_actors(suffix: str = "") -> None:
    """Kill the bus actors named so, and return once each is dead in Ray's word and its
    process is gone.

    The run takes only Ray's word for a death (a loaded machine took longer to give it
    than the hosts' client retries, and the run then failed on those first). But Ray
    gives it as soon as it kills an actor, while the process, and the bus in it, may go
    on answering for a moment: a ping after Ray's word was answered 9 times in 10 here,
    and a loaded full run's last three ticks all were (the run ended without an error).
    """
    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

    killed, pids = [], []
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"].startswith("hivemem-bus-") and a["name"].endswith(suffix):
            killed.append(ray.get_actor(a["name"], namespace=a["namespace"]))
            pids.append(ray.get(killed[-1].pid.remote(), timeout=30))
            ray.kill(killed[-1])
    deadline = time.monotonic() + 30
    for actor in killed:
        while time.monotonic() < deadline:
            try:
                ray.get(actor.pid.remote(), timeout=2)
            except (ActorUnavailableError, GetTimeoutError):
                pass  # not dead yet in Ray's word
            except RayActorError:
                break
            time.sleep(0.1)
    for pid in pids:  # the actors run on this machine (a local cluster)
        while not _process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped holds no socket)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_a_run_whose_bus_actor_dies_fails_at_once() -> None:
    """Hosts would wait out their bus clients' timeouts (3 x 60 s) first."""
    s = load_scenario("relay_qa", ["run.ticks=4", "run.hosts=1"])
    killed: list[float] = []

    def kill_the_bus(t: int, pool: Any) -> None:
        if t == 1:
            _kill_bus_actors()
            killed.append(time.monotonic())

    with pytest.raises(HivememError, match=r"bus actor 0 .* died"):
        run_once(s, remote=True, hooks={"before_tick": kill_the_bus})
    assert killed and time.monotonic() - killed[0] < 30
    assert _named_actors("hivemem-") == []


def test_a_failing_run_with_a_dead_shard_cleans_up_and_raises_its_own_error() -> None:
    s = load_scenario(
        "relay_qa", ["run.ticks=4", "run.hosts=1", "run.bus_shards=2", "metrics_port=0"]
    )
    targets: list[Any] = []
    mine = f"{os.getpid()}-*.json"  # other drivers' may lie there (or run meanwhile)
    before = set(BUS_TARGETS_DIR.glob(mine))

    def kill_a_shard_and_fail(t: int, pool: Any) -> None:
        if t == 1:
            targets.extend(set(BUS_TARGETS_DIR.glob(mine)) - before)
            _kill_bus_actors("-0")
            time.sleep(0.5)
            raise RuntimeError("the run's own failure")

    with pytest.raises(RuntimeError, match="the run's own failure"):
        run_once(s, remote=True, hooks={"before_tick": kill_a_shard_and_fail})
    assert len(targets) == 1
    assert not targets[0].exists()  # else HivememBusDown fires for ever
    assert _named_actors("hivemem-") == []  # the live shard was killed too


def test_runs_can_share_one_driver_metrics() -> None:
    """The embedded bus's series register once per registry and serve every run."""
    s = load_scenario("relay_qa", ["run.ticks=3", "run.hosts=1"])
    metrics = DriverMetrics()
    run_once(s, metrics=metrics)
    run_once(s, metrics=metrics)
    ticks = metrics.registry.get_sample_value("hivemem_driver_ticks_total", {"scenario": s.name})
    requests = metrics.registry.get_sample_value(
        "hivemem_bus_requests_total", {"op": "write_many", "code": "ok"}
    )
    assert ticks == 6
    assert requests is not None and requests >= 6  # the second run's bus counted too


def test_hosts_that_started_are_cleaned_up_when_another_fails_to() -> None:
    """The analysts' hosts fail to build (an agent type that refuses to be built); the
    scouts' host had started and must not outlive the run."""
    s = load_scenario("relay_qa", ["run.ticks=3", f"agents.1.type={UNBUILDABLE}"])
    with pytest.raises(Exception, match="refuses to be built"):
        run_once(s, hosts=3)
    assert _named_actors("hivemem-host-") == []
