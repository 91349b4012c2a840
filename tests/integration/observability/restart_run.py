"""A run on the cluster at ``argv[1]`` whose first host is killed at tick 10; prints the
driver's exposition. Run by ``test_ray_jobs.py`` in its own process (a test process is
already connected to another Ray)."""

from __future__ import annotations

import sys
from typing import Any

import ray
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario
from prometheus_client import generate_latest


def kill_first_host_at_tick_10(t: int, pool: Any) -> None:
    if t == 10:
        ray.kill(pool.handles[0], no_restart=False)


def main(address: str) -> None:
    ray.init(address=address, log_to_driver=False)
    scenario = load_scenario("capacity_stream", ["run.ticks=20", "agents.0.count=4"])
    metrics = DriverMetrics()
    run_once(scenario, hosts=2, hooks={"before_tick": kill_first_host_at_tick_10}, metrics=metrics)
    sys.stdout.write(generate_latest(metrics.registry).decode())


if __name__ == "__main__":
    main(sys.argv[1])
