"""A seeded run gives the same results on 1 host and 3 when private and group writers
are mixed in one roster: each host then sends its own batch of the group's searches and
writes, of a size the host count decides (the built-ins split their groups evenly, so
they did not show that a search's scores, and random eviction, depended on it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario

pytestmark = pytest.mark.usefixtures("ray_session")

MIXED = """\
schema_version: 1
name: mixed
task: {family: capacity_stream, params: {keys: 48, facts_per_tick: 2}}
agents:
  - {role: agent, count: 3, params: {write_tier: private, read_tiers: [private], k: 4}}
  - {role: agent, count: 3, groups: [g], params: {write_tier: shared, read_tiers: [shared], k: 4}}
  - {role: agent, count: 2, params: {write_tier: private, read_tiers: [private], k: 4}}
memory:
  dim: 256
  private: {capacity: 6, eviction: EVICTION, write_policy: always_add}
  shared: {capacity: 10, eviction: EVICTION, write_policy: always_add}
run: {seed: 0, ticks: 25, baseline: false}
"""


@pytest.mark.parametrize("eviction", ["lru", "random"])
def test_a_mixed_roster_gives_the_same_run_on_one_and_three_hosts(
    tmp_path: Path, eviction: str
) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED.replace("EVICTION", eviction))
    scenario = load_scenario(str(path))
    one, three = run_once(scenario, hosts=1), run_once(scenario, hosts=3)
    assert one.summary == three.summary
    assert one.rows == three.rows
