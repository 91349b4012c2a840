"""The scenario fuzzer's CI size, and the mistakes it found, each refused as it validates.

``hivemem.platform.scenario_fuzz`` mutates the built-in scenarios; every mutant must be
accepted or refused with a :class:`ScenarioError` naming where in the file, in a few
lines, and every accepted one must build as a run builds it. The tests after the first
are the mutants it found accepted (or refused otherwise) before their fixes, made small.
"""

from __future__ import annotations

import pytest
from hivemem.platform.scenario import load_scenario
from hivemem.platform.scenario_fuzz import MAX_LINE, build_run_setup, fuzz
from hivemem.platform.scenario_problems import SHOWN_PROBLEMS, Problem, ScenarioError


def test_two_thousand_mutants_are_accepted_and_built_or_refused_with_their_place() -> None:
    tally = fuzz(2_000, seed=0, build_every=5)
    bugs = [
        f"mutant {m.index} ({m.base}, {', '.join(m.kinds)}):\n{o.detail}" for m, o in tally.bugs
    ]
    assert not bugs, "\n\n".join(bugs)
    assert tally.verdicts["refused"] > 1_500  # the mutations do break files
    assert tally.verdicts["accepted"] > 100 and tally.built > 20  # and some still run
    assert set(tally.by_kind) >= {"delete_key", "many_roles", "broken_yaml", "whole_file"}


def _refused(scenario: str, *settings: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario, list(settings))
    return caught.value


@pytest.mark.parametrize("field", ["importance_noise", "zipf_a"])
def test_an_infinite_float_is_refused(field: str) -> None:
    # Before: accepted, and the run folder's resolved scenario held null, an error to read.
    [problem] = _refused("capacity_stream", f"task.params.{field}=.inf").problems
    assert problem.path == f"task.params.{field}"
    assert "finite" in problem.message


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("task.params.zipf_a=1e-17", "greater than or equal to 0.001"),
        ("task.params.zipf_a=1000", "less than or equal to 100"),
        ("task.params.facts_per_tick=1001", "less than or equal to 1000"),
    ],
)
def test_capacity_stream_refuses_a_skew_numpy_refuses_and_endless_facts(
    setting: str, says: str
) -> None:
    # Before: zipf_a 1e-17 stopped the run at its first question (numpy's zipf wants
    # a > 1, and 1e-17 + 1 is 1); a billion facts a tick never finished the first tick.
    [problem] = _refused("capacity_stream", setting).problems
    assert (problem.path, says in problem.message) == (setting.split("=")[0], True)


def test_the_bounds_of_capacity_stream_run() -> None:
    for setting in ("task.params.zipf_a=0.001", "task.params.zipf_a=100"):
        build_run_setup(
            load_scenario("capacity_stream", [setting, "task.params.facts_per_tick=1000"])
        )


def test_a_million_agents_in_all_is_the_bound_not_per_entry() -> None:
    # Before: each entry within 1,000,000 passed, and a run built billions of agents.
    error = _refused("relay_qa", "agents.0.count=600000", "agents.1.count=400001")
    [problem] = error.problems
    assert problem.path == "agents"
    assert problem.message == "1,000,001 agents in all; a run has at most 1,000,000"
    load_scenario("relay_qa", ["agents.0.count=600000", "agents.1.count=400000"])


def test_a_huge_name_is_named_in_a_short_line() -> None:
    # Before: the 100,000-character role was echoed whole, in a 100,000-character line.
    error = _refused("relay_qa", "agents.0.role=" + "x" * 100_000)
    line = str(error).splitlines()[1]
    assert len(line) < MAX_LINE
    assert line.startswith("  - agents.0.role (override agents.0.role=xxx")  # the setting, cut
    assert ": unknown role of relay_qa 'xxx" in line
    assert "(99,932 characters left out)" in line and line.endswith("(known: analyst, scout)")
    assert len(error.problems[0].message) > 100_000  # the problem itself keeps it all


def test_many_problems_are_counted_past_the_first_ones() -> None:
    # Before: 300 entries with one mistake each made a 300-line error.
    roster = "[" + ", ".join(["{role: scout, count: 1, params: {k: 0}}"] * 300) + "]"
    error = _refused("relay_qa", f"agents={roster}")
    lines = str(error).splitlines()
    assert len(error.problems) == 300
    assert lines[0].endswith(": 300 problem(s)")
    assert len(lines) == 1 + SHOWN_PROBLEMS + 1 and lines[-1] == "  - and 290 more"


@pytest.mark.parametrize(
    ("scenario", "setting", "path"),
    [
        ("team_insights", "agents.0.groups=['']", "agents.0.groups.0"),
        ("relay_qa", "memory.access.public_namespaces=['']", "memory.access.public_namespaces.0"),
    ],
)
def test_an_empty_namespace_name_is_refused(scenario: str, setting: str, path: str) -> None:
    # Before: accepted; the bus refused the empty namespace at the first tick.
    [problem] = _refused(scenario, setting).problems
    assert (problem.path, problem.message) == (path, "String should have at least 1 character")


@pytest.mark.parametrize(
    ("scenario", "setting", "tier"),
    [
        ("team_insights", "agents.0.groups=[]", "graph"),
        ("capacity_stream", "agents.0.params.write_tier=shared", "shared"),
        ("capacity_stream", "agents.0.params={}", "shared"),  # write_tier's default
    ],
)
def test_an_agent_without_a_namespace_on_a_tier_it_uses_is_refused(
    scenario: str, setting: str, tier: str
) -> None:
    # Before: accepted; the agent raised "has no group" at the run's first tick.
    [problem] = _refused(scenario, setting).problems
    assert problem.path == "agents.0.groups"
    assert f"uses the {tier} tier but has no group" in problem.message
    load_scenario(scenario, [setting, "agents.0.params.group=g", "agents.0.groups=[g]"])


def test_the_file_a_refusal_names_is_named_whole() -> None:
    """Cutting long words cut the file's own path in the error's first line (a pytest
    worker's temporary folder was past 80 characters)."""
    source = "/tmp/" + "deep-folder-" * 20 + "mine.yaml"
    error = ScenarioError(source, [Problem("run.ticks", "required, missing", 23)])
    assert str(error).splitlines()[0] == f"{source}: 1 problem(s)"
