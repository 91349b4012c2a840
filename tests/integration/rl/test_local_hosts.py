"""The in-process host pool the environments run (LocalHosts) commits in the Ray pool's
order, so an episode on several in-process hosts is the run on one."""

from __future__ import annotations

from pathlib import Path

from hivemem.platform.host_pool import LocalHosts
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario

TEAM = """\
schema_version: 1
name: team_small_graph
task: {family: team_insights, params: {task_types: 40, options: 6, episode_ticks: 5}}
agents:
  - {role: solver, count: 8, type: team_insights.solver, groups: [red]}
memory:
  dim: 256
  graph: {capacity: 80, eviction: fifo, write_policy: always_add, retrieval: vector}
run: {seed: 0, ticks: 30, hosts: 1, baseline: false}
"""


def test_in_process_hosts_commit_writes_then_promotions_whatever_their_number(
    tmp_path: Path,
) -> None:
    """Every host's writes, then every host's promotions: committed host by host
    instead, three hosts interleave them and the graph holds other nodes."""
    path = tmp_path / "team.yaml"
    path.write_text(TEAM)
    scenario = load_scenario(str(path))
    runs = [run_once(scenario, hosts=n, host_pool=LocalHosts) for n in (1, 3)]
    assert runs[0].rows == runs[1].rows
