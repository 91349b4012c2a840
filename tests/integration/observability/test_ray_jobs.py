"""``ray job submit --working-dir . -- hivemem run ...`` on a ``ray start --head`` cluster,
and the agent hosts' metrics on the node's metrics export port."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    AGENTS,
    HOSTS,
    TICKS,
    RayHead,
    host_series,
    panel_queries,
    promtool,
    query,
    readme_cluster_commands,
    readme_command,
    scrape,
)


def test_the_readme_cluster_commands_put_the_run_folder_in_the_checkout() -> None:
    """The fixtures run the README's commands (a token made before ``ray start``, the
    venv active for the job's ``hivemem``); what they change is checked here: the job
    runs in Ray's copy of the checkout, so a relative ``--out`` lands in that copy."""
    entrypoint = readme_command("ray job submit").split(" -- ", 1)[1]
    assert re.search(r'--out "?(\$PWD|/)', entrypoint), entrypoint
    commands = readme_cluster_commands()
    order = [c.split()[0] if c.startswith(". ") else " ".join(c.split()[:2]) for c in commands]
    assert order.index(".") < order.index("ray get-auth-token") < order.index("ray start")


def test_ray_job_submit_runs_a_scenario_on_the_cluster(ray_job: dict[str, Any]) -> None:
    proc: subprocess.CompletedProcess[str] = ray_job["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    # the upload honours .gitignore (no .venv, no caches): small
    assert "Uploading package" in proc.stdout + proc.stderr
    folders = list(Path(ray_job["out"]).iterdir())
    assert len(folders) == 1
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["ticks"] == TICKS and summary["agents"] == AGENTS
    assert summary["hosts"] == HOSTS
    assert 0.5 < summary["summary"]["score"] <= 1.0


def test_the_hosts_metrics_reach_the_node_exporter(
    ray_job: dict[str, Any], ray_head: RayHead
) -> None:
    assert ray_job["proc"].returncode == 0
    samples = host_series(ray_head, TICKS * AGENTS)
    total = {}
    for (name, _labels), value in samples.items():
        total[name] = total.get(name, 0.0) + value
    assert total["ray_hivemem_host_agent_steps_total"] == TICKS * AGENTS
    # every tick each host sends at least one search_many (each agent recalls once)
    assert total["ray_hivemem_host_batch_entries_count"] >= TICKS * HOSTS
    assert total["ray_hivemem_host_bus_request_duration_seconds_count"] > 0
    assert total["ray_hivemem_host_bus_request_duration_seconds_sum"] > 0
    ops = {dict(labels).get("op") for (name, labels) in samples if "batch_entries" in name}
    assert {"search_many", "write_many"} <= ops
    assert all("agent" not in dict(labels) for _, labels in samples)


RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId"}
"""Labels Ray's exporter adds to every series, in its own (camelCase) spelling."""


def test_promtool_accepts_the_hosts_exposition(ray_job: dict[str, Any], ray_head: RayHead) -> None:
    """``promtool check metrics`` on our families of the node's exposition reports
    nothing once Ray's own label names are spelt in snake_case (those we cannot change)."""
    assert ray_job["proc"].returncode == 0
    host_series(ray_head, TICKS * AGENTS)
    text = scrape(f"http://127.0.0.1:{ray_head.metrics_port}/metrics")
    ours = [line for line in text.splitlines() if _family(line).startswith("ray_hivemem_host_")]
    assert any(_family(line) == "ray_hivemem_host_agent_steps_total" for line in ours)
    labels = {m.group(1) for line in ours for m in re.finditer(r'[{,]([A-Za-z_]\w*)="', line)}
    assert {name for name in labels if name != name.lower()} == RAY_LABELS
    snake = "".join(
        re.sub(r'([{,])([A-Z]\w*)="', lambda m: m.group(1) + _snake(m.group(2)) + '="', line) + "\n"
        for line in ours
    )
    result = promtool("check", "metrics", stdin=snake)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def _family(line: str) -> str:
    """The metric name of an exposition line (a sample, ``# HELP`` or ``# TYPE``)."""
    parts = line.split(" ")
    name = parts[2] if line.startswith("#") and len(parts) > 2 else parts[0]
    return name.split("{")[0]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def node_restarts(ray_head: RayHead) -> float:
    """The hosts' restarts the node exports, summed over its workers."""
    url = f"http://127.0.0.1:{ray_head.metrics_port}/metrics"
    return sum(
        s.value
        for family in text_string_to_metric_families(scrape(url))
        for s in family.samples
        if s.name == "ray_hivemem_host_restarts_total"
    )


def panel_restarts(prometheus: str) -> float:
    """The dashboard's host restarts on this node, as Prometheus evaluates them now."""
    expr = panel_queries("Host restarts")["restarted on {{instance}}"]
    return sum(float(s["value"][1]) for s in query(prometheus, expr))


def test_a_restarted_host_is_counted_by_the_host_and_the_driver(
    ray_head: RayHead, prometheus: str
) -> None:
    """A host killed mid-run comes back (Ray ``max_restarts``) and says so, on the node
    and on the dashboard. The restarted host's new worker exports its own series (Ray
    labels each with its ``WorkerId``), born at 1: ``increase()`` alone showed 0."""
    before = node_restarts(ray_head)
    shown = panel_restarts(prometheus)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("restart_run.py")), ray_head.gcs],
        env=ray_head.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'hivemem_driver_host_restarts_total{scenario="capacity_stream"} 1.0' in proc.stdout
    deadline = time.monotonic() + 30
    restarts = before
    while restarts < before + 1 and time.monotonic() < deadline:
        restarts = node_restarts(ray_head)
        time.sleep(0.5)
    assert restarts == before + 1
    deadline = time.monotonic() + 30
    while panel_restarts(prometheus) < shown + 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert panel_restarts(prometheus) == shown + 1
