"""A boolean where a scenario file wants a number is refused with its path and line.

Python counts ``True`` as 1 and pydantic's lax mode took it for one: ``count: true`` ran
one agent, ``ppr_alpha: true`` was 1.0, ``schema_version: true`` was version 1. Every
config model (the scenario's, the store's, a task family's ``Params``, of the built-in
families and of one's own) refuses a boolean for an int, a float, an int ``Literal``,
and inside a list or mapping of them; a ``bool`` field still takes one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hivemem.platform.scenario import load_scenario
from hivemem.platform.scenario_problems import ScenarioError
from hivemem.scenarios.base import TaskParams
from pydantic import Field

ROOT = Path(__file__).resolve().parents[3]

INTEGER = "expected an integer, got the boolean"
NUMBER = "expected a number, got the boolean"


@pytest.mark.parametrize(
    ("scenario", "setting", "says"),
    [
        ("relay_qa", "agents.0.count=true", f"{INTEGER} true"),
        ("relay_qa", "run.ticks=false", f"{INTEGER} false"),
        ("relay_qa", "run.seed=true", f"{INTEGER} true"),
        ("relay_qa", "run.agents_per_host=true", f"{INTEGER} true"),
        ("relay_qa", "metrics_port=true", f"{INTEGER} true"),
        ("relay_qa", "schema_version=true", "expected 1, got the boolean true"),
        ("relay_qa", "memory.dim=true", f"{INTEGER} true"),
        ("relay_qa", "memory.shared.capacity=true", f"{INTEGER} true"),
        ("relay_qa", "memory.shared.index.hnsw_m=true", f"{INTEGER} true"),
        ("relay_qa", "memory.embedder.hashes=true", f"{INTEGER} true"),
        ("relay_qa", "memory.graph.ppr_alpha=true", f"{NUMBER} true"),
        ("relay_qa", "memory.access.default_graph_levels=[0, true]", f"{INTEGER} true at [1]"),
        ("relay_qa", "memory.access.graph_levels={a: [false]}", f"{INTEGER} false at ['a'][0]"),
        ("relay_qa", "task.params.entities=true", f"{INTEGER} true"),
        ("capacity_stream", "task.params.zipf_a=true", f"{NUMBER} true"),
    ],
)
def test_a_boolean_for_a_number_is_refused_with_its_path(
    scenario: str, setting: str, says: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario, [setting])
    [problem] = caught.value.problems
    assert (problem.path, problem.message) == (setting.split("=")[0], says)


def test_a_boolean_where_one_is_meant_still_is_one() -> None:
    settings = ["run.baseline=false", "outputs.plots=false", "memory.shared.index.huge_pages=true"]
    s = load_scenario("relay_qa", settings)
    assert not s.run.baseline and not s.outputs.plots and s.memory.shared.index.huge_pages
    old_prefault = load_scenario("relay_qa", ["memory.shared.index.prefault=false"])
    assert old_prefault.memory.shared.index.prefault == "off"  # what false meant before modes


class OwnParams(TaskParams):
    """A family of one's own: its Params derive from TaskParams."""

    rounds: int = Field(3, ge=1)
    share: float | None = None


@pytest.mark.parametrize(
    ("params", "says"),
    [({"rounds": True}, f"{INTEGER} true"), ({"share": False}, f"{NUMBER} false")],
)
def test_a_task_family_of_ones_own_refuses_a_boolean_for_a_number(
    params: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        OwnParams(**params)


def test_validate_names_the_file_line_and_field_of_count_true(tmp_path: Path) -> None:
    """``count: true`` was one agent: ``validate`` said ok, with 9 agents instead of 12."""
    text = (ROOT / "scenarios" / "relay_qa.yaml").read_text(encoding="utf-8")
    path = tmp_path / "mine.yaml"
    text = text.replace("count: 4", "count: true", 1)
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("    count: true") + 1
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hivemem.platform.cli", "validate", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.splitlines() == [
        f"error: {path}: 1 problem(s)",
        f"  - agents.0.count (line {line}): {INTEGER} true",
    ]
