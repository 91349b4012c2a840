"""Driver and embedded-bus metrics of a run, read from a real /metrics endpoint."""

from __future__ import annotations

import os
import urllib.request

import pytest
from hivemem.memory_bus.testing.server_process import free_port
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.usefixtures("ray_session")


def test_a_run_exports_ticks_steps_score_and_the_bus_series() -> None:
    s = load_scenario("capacity_stream", ["run.ticks=40", "agents.0.count=3"])
    metrics = DriverMetrics()
    port = free_port()
    metrics.serve(port)
    result = run_once(s, metrics=metrics)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    label = (("scenario", "capacity_stream"),)
    assert samples[("hivemem_driver_ticks_total", label)] == 40
    assert samples[("hivemem_driver_tick_duration_seconds_count", label)] == 40
    assert samples[("hivemem_driver_agent_steps_total", label)] == 3 * 40
    assert samples[("hivemem_driver_agents", label)] == 3
    assert samples[("hivemem_driver_progress_ratio", label)] == 1.0
    assert samples[("hivemem_driver_score_ratio", label)] == pytest.approx(result.summary["score"])
    # the embedded bus reports into the same endpoint
    items = samples[("hivemem_bus_items", (("tier", "private"),))]
    assert items == result.rows[-1]["items"]["private"] > 0
    evictions = sum(v for (n, _), v in samples.items() if n == "hivemem_bus_evictions_total")
    assert evictions == sum(sum(r["evicted"].values()) for r in result.rows) > 0


@pytest.mark.parametrize("shards", [1, 2])
def test_bus_actors_serve_their_metrics_and_are_listed_for_prometheus(shards: int) -> None:
    """A run with the bus as Ray actors (the cluster mode): each shard serves /metrics on
    its node and the run lists those endpoints in a file-discovery file while it runs."""
    import json

    from hivemem.platform.runner import BUS_TARGETS_DIR

    s = load_scenario(
        "capacity_stream",
        ["run.ticks=12", "agents.0.count=3", f"run.bus_shards={shards}", "metrics_port=9100"],
    )
    seen: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

    def scrape(t: int, row: dict) -> None:  # type: ignore[type-arg]
        if t != 10:
            return
        (path,) = BUS_TARGETS_DIR.glob(f"{os.getpid()}-*.json")  # this driver's
        (group,) = json.loads(path.read_text())
        assert group["labels"] == {"scenario": "capacity_stream"}
        for target in group["targets"]:
            body = urllib.request.urlopen(f"http://{target}/metrics", timeout=10).read().decode()
            seen[target] = {
                (x.name, tuple(sorted(x.labels.items()))): x.value
                for family in text_string_to_metric_families(body)
                for x in family.samples
            }

    run_once(s, remote=True, on_tick=scrape)
    assert len(seen) == shards
    writes = sum(
        v
        for samples in seen.values()
        for (name, labels), v in samples.items()
        if name == "hivemem_bus_requests_total" and ("op", "write_many") in labels
    )
    assert writes >= 10  # every tick's commit wrote through the shards
    for samples in seen.values():  # gauges refresh each second: present, maybe still 0
        assert ("hivemem_bus_items", (("tier", "private"),)) in samples
    assert not list(BUS_TARGETS_DIR.glob(f"{os.getpid()}-*.json"))  # it goes with the run
