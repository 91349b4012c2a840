"""A real Prometheus (Debian's binary) scrapes a run's driver with its embedded bus, a
standalone ``hivemem bus serve``, and the Ray node found through Ray's service-discovery
file, with the scrape jobs of ``deploy/observability/prometheus.yml``."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
import yaml
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.platform.runner import RunResult

from .conftest import (
    AGENTS,
    CONFIG,
    TICKS,
    StandaloneBus,
    panel_queries,
    panels,
    query,
    series,
)


def value(base: str, expr: str, timeout: float = 30.0) -> float:
    """The single value of ``expr``, waiting until Prometheus has it."""
    result = series(base, expr, timeout)
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_every_target_is_up(prometheus: str) -> None:
    assert value(prometheus, 'up{job="hivemem-driver"}') == 1
    assert value(prometheus, 'up{job="hivemem-bus"}') == 1
    # the node's metrics export port, found through Ray's service-discovery file
    assert value(prometheus, 'sum(up{job="ray"})') >= 1


def test_the_drivers_series_arrived(prometheus: str, driver_run: tuple[int, RunResult]) -> None:
    result = driver_run[1]
    job = '{job="hivemem-driver",scenario="capacity_stream"}'
    assert value(prometheus, f"hivemem_driver_ticks_total{job}") == 25
    assert value(prometheus, f"hivemem_driver_agent_steps_total{job}") == 25 * 3
    assert value(prometheus, f"hivemem_driver_score_ratio{job}") == pytest.approx(
        result.summary["score"]
    )
    assert value(prometheus, f"hivemem_driver_recalls_total{job}") == sum(
        r["recalls"] for r in result.rows
    )
    asked = value(prometheus, 'hivemem_driver_task_outcomes_total{kind="asked"}')
    correct = value(prometheus, 'hivemem_driver_task_outcomes_total{kind="correct"}')
    assert 0 < correct <= asked
    assert correct / asked == pytest.approx(result.summary["score"])


def test_the_embedded_bus_series_arrived(
    prometheus: str, driver_run: tuple[int, RunResult]
) -> None:
    rows = driver_run[1].rows
    on = '{job="hivemem-driver"}'
    assert (
        value(prometheus, 'hivemem_bus_items{job="hivemem-driver",tier="private"}')
        == (rows[-1]["items"]["private"])
    )
    decisions = value(prometheus, f"sum(hivemem_bus_write_decisions_total{on})")
    assert decisions == sum(sum(r["ops"].values()) for r in rows) > 0
    evicted = value(prometheus, f"sum(hivemem_bus_evictions_total{on})")
    assert evicted == sum(sum(r["evicted"].values()) for r in rows) > 0
    # every recalled item's age was counted; ages are within the run's 25 ticks
    ages = value(prometheus, f"sum(hivemem_bus_recalled_item_age_ticks_count{on})")
    assert ages == sum(r["hits"] for r in rows) > 0
    mean = value(prometheus, f"sum(hivemem_bus_recalled_item_age_ticks_sum{on})") / ages
    assert 0 < mean < 25


def test_the_standalone_bus_series_arrived(prometheus: str) -> None:
    bus = 'job="hivemem-bus"'
    assert value(prometheus, f'hivemem_bus_requests_total{{{bus},op="write",code="ok"}}') == 3
    assert value(prometheus, f'hivemem_bus_items{{{bus},tier="shared"}}') == 3
    assert value(prometheus, f'hivemem_bus_write_decisions_total{{{bus},decision="ADD"}}') == 3
    p50 = value(
        prometheus,
        f'histogram_quantile(0.5, sum by (le) (hivemem_bus_request_duration_seconds_bucket{{{bus},op="write"}}))',
    )
    assert 0 < p50 < 1.0


def test_the_alert_rules_load_and_evaluate_on_the_real_series(prometheus: str) -> None:
    """Every rule of deploy/observability/alerts.yml evaluated without error against what
    the buses export, and none fires: both buses are up and nothing failed."""
    rules = yaml.safe_load((CONFIG.parent / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    deadline = time.monotonic() + 30
    while True:
        body = json.loads(urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10).read())
        loaded = [r for g in body["data"]["groups"] for r in g["rules"]]
        evaluated = [r for r in loaded if r.get("lastEvaluation", "").startswith("20")]
        if len(evaluated) == len(names) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"] for r in loaded} == names
    assert all(r["health"] == "ok" for r in evaluated) and len(evaluated) == len(names), loaded
    assert all(r["state"] == "inactive" for r in evaluated), loaded


def test_the_hosts_series_arrived_from_the_ray_node(prometheus: str) -> None:
    steps = value(prometheus, 'sum(ray_hivemem_host_agent_steps_total{job="ray"})')
    assert steps == TICKS * AGENTS


LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
NEVER_COUNTED = "ray_hivemem_host_restarts_total"
"""Ray exports a counter only once it has counted: not before test_ray_jobs.py restarts a host."""


def test_every_dashboard_query_returns_series_with_its_legends_labels(prometheus: str) -> None:
    """Each panel's query, evaluated by the real Prometheus on the live endpoints, returns
    series, and every label its legend shows is set on each: a misspelt name, a label the
    series do not carry, or a histogram queried without ``_bucket`` shows up here as an
    empty panel or a blank legend in Grafana."""
    evaluated = 0
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            if NEVER_COUNTED in expr:
                continue  # test_ray_jobs.py restarts a host and evaluates these
            shown = set(LEGEND.findall(target["legendFormat"]))
            for found in series(prometheus, expr):
                blank = {label for label in shown if not found["metric"].get(label)}
                assert not blank, (panel["title"], expr, found["metric"])
            evaluated += 1
    assert evaluated >= 30


def test_a_new_error_code_shows_on_the_errors_panel(
    prometheus: str, standalone_bus_server: StandaloneBus
) -> None:
    """An (op, code) is exported from its first request on: its series is born at 1,
    which ``rate()`` alone sees as flat (0 errors per second); the panel shows it."""
    reader = standalone_bus_server.client("outsider", [])
    with pytest.raises(AccessDeniedError):  # the bus's first (get, access_denied)
        reader.get("shared", "team", 1)
    reader.close()
    errors = panel_queries("Bus errors per second by op and code")["{{op}} {{code}}"]
    deadline = time.monotonic() + 30
    denied: list[float] = []
    while not (denied and denied[0] > 0) and time.monotonic() < deadline:
        time.sleep(1)
        denied = [
            float(s["value"][1])
            for s in query(prometheus, errors)
            if s["metric"] == {"op": "get", "code": "access_denied"}
        ]
    assert denied == [pytest.approx(1 / 60)], (errors, denied)
