"""Scenario files: every mistake is reported with its path, a specific message and its line.

Each invalid case is a built-in scenario with one mistake in it, so the matrix also keeps
checking that the built-ins themselves stay what the cases expect.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.registry import Registry
from hivemem.platform.scenario import (
    builtin_names,
    dump_resolved,
    json_schema,
    load_scenario,
    parse_scenario,
    task_families,
)
from hivemem.platform.scenario_problems import ScenarioError, read_mapping
from hivemem.scenarios.base import Task
from hivemem.scenarios.relay_qa import RelayQA

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "scenarios"
BUILTINS = ["capacity_stream", "evolving_facts", "relay_qa", "team_insights"]
MISTAKE = -1
"""Expected line: wherever the mistaken text is in the edited file."""


def builtin_text(name: str) -> str:
    return (SCENARIOS / f"{name}.yaml").read_text(encoding="utf-8")


def as_list(text: str) -> str:
    """The same YAML mapping, as the one item of a list."""
    lines = text.splitlines()
    return "\n".join(["- " + lines[0], *("  " + line for line in lines[1:])]) + "\n"


@dataclass(frozen=True)
class Case:
    """A built-in scenario with one mistake, and the problem it must produce."""

    id: str
    base: str
    old: str
    new: str
    path: str
    message: str
    line: int | None = MISTAKE
    overrides: tuple[str, ...] = ()
    setting: str | None = None
    """The ``--set`` the problem names instead of a line (its value came from it)."""
    also: tuple[str, ...] = ()
    """Paths of other problems the same mistake causes (e.g. a renamed required key)."""

    def text(self) -> str:
        text = builtin_text(self.base)
        assert text.count(self.old) >= 1, f"{self.base}.yaml no longer contains {self.old!r}"
        return text.replace(self.old, self.new, 1)

    def expected_line(self) -> int | None:
        if self.line != MISTAKE:
            return self.line
        text = self.text()
        assert text.count(self.new) == 1, f"{self.new!r} must mark one place"
        return text[: text.index(self.new)].count("\n") + 1


INVALID = [
    Case(
        "misspelt-top-level-key",
        "relay_qa",
        "description:",
        "descripton:",
        "descripton",
        "unknown key 'descripton'; did you mean 'description'",
    ),
    Case(
        "misspelt-run-key",
        "relay_qa",
        "ticks: 30",
        "tiks: 30",
        "run.tiks",
        "did you mean 'ticks'?",
        also=("run.ticks",),
    ),
    Case(
        "misspelt-key-in-memory-shared",
        "relay_qa",
        "shared: {capacity: 120",
        "shared: {capacty: 120",
        "memory.shared.capacty",
        "unknown key 'capacty'; did you mean 'capacity'?",
    ),
    Case(
        "misspelt-key-in-graph-tier",
        "team_insights",
        "retrieval: vector",
        "retreival: vector",
        "memory.graph.retreival",
        "did you mean 'retrieval'?",
    ),
    Case(
        "unknown-embedder-name",
        "relay_qa",
        "  dim: 256\n",
        "  dim: 256\n  embedder: {name: hashin}\n",
        "memory.embedder",
        "unknown embedder 'hashin'; did you mean 'hashing'? (known: hashing, sentence-transformers)",
        line=22,
    ),
    Case(  # pydantic puts the union member's tag in the path; the file has no such key
        "misspelt-key-of-an-embedder",
        "relay_qa",
        "  dim: 256\n",
        "  dim: 256\n  embedder: {name: sentence-transformers, modelpath: /m}\n",
        "memory.embedder.modelpath",
        "unknown key 'modelpath'; did you mean 'model_path'? (known: device, model_path, name)",
        line=22,
    ),
    Case(
        "misspelt-roster-key",
        "relay_qa",
        "    count: 4",
        "    cuont: 4",
        "agents.0.cuont",
        "unknown key 'cuont'; did you mean 'count'?",
        also=("agents.0.count",),
    ),
    Case(
        "unknown-family-near-miss",
        "relay_qa",
        "family: relay_qa",
        "family: relay_q",
        "task.family",
        "unknown task family 'relay_q'; did you mean 'relay_qa'?",
    ),
    Case(
        "family-not-a-task-class",
        "relay_qa",
        "family: relay_qa",
        "family: 'hivemem.agents.builtin:FactMemoryAgent'",
        "task.family",
        "is not a Task subclass",
    ),
    Case(
        "bad-family-param-name",
        "capacity_stream",
        "zipf_a: 1.3",
        "zipf: 1.3",
        "task.params.zipf",
        "unknown key 'zipf'; did you mean 'zipf_a'?",
    ),
    Case(
        "bad-family-param-type",
        "relay_qa",
        "entities: 60",
        "entities: many",
        "task.params.entities",
        "valid integer",
    ),
    Case(
        "bad-family-param-range",
        "evolving_facts",
        "as_of_fraction: 0.5",
        "as_of_fraction: 1.5",
        "task.params.as_of_fraction",
        "less than or equal to 1",
    ),
    Case(
        "unknown-role",
        "relay_qa",
        "role: analyst",
        "role: analyts",
        "agents.1.role",
        "unknown role of relay_qa 'analyts'; did you mean 'analyst'?",
    ),
    Case(
        "unknown-agent-type-near-miss",
        "team_insights",
        "type: team_insights.solver",
        "type: team_insight.solver",
        "agents.0.type",
        "unknown agent type 'team_insight.solver'; did you mean 'team_insights.solver'",
    ),
    Case(
        "agent-param-refused-by-its-type",
        "relay_qa",
        "group: commons, k: 8}",
        "group: commons, k: 0}",
        "agents.1.params",
        "bad parameters for agent type 'fact_memory': invalid k",
    ),
    Case(
        "agent-param-unknown-to-its-type",
        "relay_qa",
        "group: commons, k: 8}",
        "group: commons, kk: 8}",
        "agents.1.params",
        "unknown fact_memory params: ['kk']",
    ),
    Case(
        "solver-param-refused-by-its-type",
        "team_insights",
        "    groups: [blue]",
        "    groups: [blue]\n    params: {k: 0}",
        "agents.1.params",
        "bad parameters for agent type 'team_insights.solver': invalid k",
        line=18,  # the params line the mistake adds
    ),
    Case(
        "unknown-eviction-near-miss",
        "capacity_stream",
        "eviction: lru",
        "eviction: lur",
        "memory.private.eviction",
        "unknown eviction policy 'lur'; did you mean 'lru'",
    ),
    Case(
        "unknown-write-policy",
        "relay_qa",
        "write_policy: dedup",
        "write_policy: merge",
        "memory.shared.write_policy",
        "unknown write policy 'merge' (known: always_add, dedup, learned:..., never)",
    ),
    Case(
        "unknown-namespace-mode",
        "relay_qa",
        "shared: {capacity: 120,",
        "shared: {capacity: 120, mode: windw,",
        "memory.shared.mode",
        "'standard', 'window', 'token_budget' or 'vector'",
    ),
    Case(
        "negative-ticks",
        "relay_qa",
        "ticks: 30",
        "ticks: -5",
        "run.ticks",
        "greater than or equal to 1",
    ),
    Case(
        "zero-count",
        "evolving_facts",
        "count: 8",
        "count: 0",
        "agents.1.count",
        "greater than or equal to 1",
    ),
    Case(
        "wrong-schema-version",
        "relay_qa",
        "schema_version: 1",
        "schema_version: 2",
        "schema_version",
        "Input should be 1",
    ),
    Case(
        "missing-run",
        "relay_qa",
        "run: {seed: 0, ticks: 30, hosts: 2}\n",
        "",
        "run",
        "required, missing",
        line=None,
    ),
    Case(
        "negative-seed",
        "relay_qa",
        "seed: 0",
        "seed: -1",
        "run.seed",
        "greater than or equal to 0",
    ),
    Case(
        "duplicate-key",
        "relay_qa",
        "ticks: 30,",
        "ticks: 3, ticks: 30,",
        "run.ticks",
        "duplicate key 'ticks' (first on line 23)",
    ),
    Case(
        "duplicate-key-on-another-line",
        "relay_qa",
        "name: relay_qa\n",
        "name: relay_qa\nname: relay\n",
        "name",
        "duplicate key 'name' (first on line 4)",
        line=5,
    ),
    Case(
        "node-that-holds-itself",
        "relay_qa",
        "name: relay_qa\n",
        "name: relay_qa\ntags: &d [*d]\n",
        "tags.0",
        "holds itself (an alias inside its own anchor)",
        line=5,
    ),
    Case(
        "set-negative-seed",
        "relay_qa",
        "",
        "",
        "run.seed",
        "greater than or equal to 0",
        line=None,  # was 23, the line of the file's seed, which the setting replaced
        overrides=("run.seed=-1",),
        setting="run.seed=-1",
    ),
    Case(
        "oracle-without-oracle-task",
        "relay_qa",
        "eviction: lru",
        "eviction: oracle",
        "memory.shared.eviction",
        "needs a task that knows its future queries; relay_qa does not",
    ),
    Case(
        "eviction-param-the-policy-lacks",
        "relay_qa",
        "eviction: lru",
        "eviction: lru, eviction_params: {strength: 3}",
        "memory.shared.eviction",
        "unknown eviction policy 'lru' parameter 'strength' (known: none)",
    ),
    Case(
        "misspelt-write-param",
        "relay_qa",
        "write_policy: dedup",
        "write_policy: dedup, write_params: {duplicate_treshold: 0.9}",
        "memory.shared.write_policy",
        "unknown write policy 'dedup' parameter 'duplicate_treshold'; did you mean "
        "'duplicate_threshold' or 'update_threshold'? (known: duplicate_threshold, key_field, "
        "update_threshold)",
    ),
    Case(
        "belady-without-oracle-task",
        "evolving_facts",
        "eviction: lru",
        "eviction: belady",
        "memory.shared.eviction",
        "evolving_facts does not",
    ),
    Case(  # the run stopped at its first tick with an access error
        "group-param-outside-the-agents-groups",
        "relay_qa",
        "groups: [analysts, commons]",
        "groups: [red, blue]",
        "agents.1.params.group",
        "group 'commons' is not one of the agent's groups (red, blue) nor a public namespace",
        line=19,  # the params line, under the groups changed
    ),
    Case(
        "oracle-on-a-tier-the-task-cannot-foresee",
        "capacity_stream",
        "  private: {capacity: 12",
        "  shared: {capacity: 12, eviction: oracle}\n  private: {capacity: 12",
        "memory.shared.eviction",
        "capacity_stream foresees the queries of its private tier only, not of shared",
    ),
    Case(
        "window-without-capacity",
        "capacity_stream",
        "private: {capacity: 12,",
        "private: {mode: window,",
        "memory.private",
        "mode 'window' needs a capacity",
    ),
    Case(
        "token-budget-without-budget",
        "relay_qa",
        "shared: {capacity: 120,",
        "shared: {mode: token_budget,",
        "memory.shared",
        "mode 'token_budget' needs token_budget",
    ),
    Case(
        "invalid-name-characters",
        "relay_qa",
        "name: relay_qa",
        "name: relay qa!",
        "name",
        "should match pattern",
    ),
    Case(
        "not-yaml",
        "relay_qa",
        "name: relay_qa",
        "name: relay_qa: again",
        "",
        "not valid YAML: mapping values are not allowed here",
    ),
    Case(
        "list-at-top",
        "relay_qa",
        builtin_text("relay_qa"),
        as_list(builtin_text("relay_qa")),
        "",
        "expected a mapping at the top, got list",
        line=None,
    ),
    Case(
        "set-index-out-of-range",
        "relay_qa",
        "",
        "",
        "agents.5.count",
        "'5' is not an index of the list at agents",
        line=None,
        overrides=("agents.5.count=3",),
        setting="agents.5.count=3",
    ),
    Case(
        "set-into-a-scalar",
        "relay_qa",
        "",
        "",
        "name.first",
        "name is not a mapping",
        line=None,
        overrides=("name.first=x",),
        setting="name.first=x",
    ),
    Case(
        "set-without-equals",
        "relay_qa",
        "",
        "",
        "run.ticks",
        "expected key=value",
        line=None,
        overrides=("run.ticks",),
    ),
    Case(
        "set-value-not-yaml",
        "relay_qa",
        "",
        "",
        "name",
        "value '[oops' is not valid YAML",
        line=None,
        overrides=("name=[oops",),
        setting="name=[oops",
    ),
    Case(
        "set-unknown-policy",  # a problem check_meaning finds, not pydantic
        "relay_qa",
        "",
        "",
        "memory.shared.eviction",
        "did you mean 'lru'",
        line=None,  # was 22, the file's shared tier
        overrides=("memory.shared.eviction=lur",),
        setting="memory.shared.eviction=lur",
    ),
    Case(
        "set-misspelt-key",
        "relay_qa",
        "",
        "",
        "run.tics",
        "did you mean 'ticks'?",
        line=None,  # was 23, the `run:` the key was set under
        overrides=("run.tics=5",),
        setting="run.tics=5",
    ),
]


def test_matrix_is_large_and_distinct() -> None:
    assert len(INVALID) >= 15
    assert len({c.id for c in INVALID}) == len(INVALID)
    assert len({(c.base, c.old, c.new, c.overrides) for c in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_scenario_names_path_message_and_line(case: Case) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(case.text(), f"{case.id}.yaml", list(case.overrides))
    problems = info.value.problems
    assert sorted(p.path for p in problems) == sorted([case.path, *case.also])
    (problem,) = [p for p in problems if p.path == case.path]
    assert case.message in problem.message
    assert problem.line == case.expected_line()
    assert problem.setting == case.setting
    if case.setting is not None:
        assert f"{case.path} (override {case.setting}): " in str(info.value)


def test_hard_coded_lines_are_the_built_in_lines() -> None:
    """The line numbers written out in this file are where those keys are in relay_qa.yaml."""
    lines = builtin_text("relay_qa").splitlines()
    assert lines[22 - 1].strip().startswith("shared: {capacity: 120")
    assert lines[15 - 1].strip() == "- role: analyst"
    assert lines[23 - 1].startswith("run:")


def test_every_problem_is_reported_at_once() -> None:
    text = (
        builtin_text("relay_qa")
        .replace("role: analyst", "role: analyts")
        .replace("write_policy: dedup", "write_policy: merge")
    )
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    assert [(p.path, p.line) for p in info.value.problems] == [
        ("agents.1.role", 15),
        ("memory.shared.write_policy", 22),
    ]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_scenario_validates(name: str) -> None:
    s = load_scenario(name)
    assert s.name == name
    assert s.task.family == name
    assert load_scenario(str(SCENARIOS / f"{name}.yaml")) == s


def test_builtin_names_are_the_shipped_files() -> None:
    assert builtin_names() == BUILTINS == sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


def test_unknown_builtin_name_suggests_the_close_one() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("relay-qa")
    assert "did you mean 'relay_qa'?" in info.value.problems[0].message


def test_missing_file_is_named() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("no/such/scenario.yaml")
    assert info.value.problems[0].message == "no such file: no/such/scenario.yaml"


def test_a_file_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(latin1))
    assert info.value.problems[0].message == "not UTF-8 text (byte 9: b'\\xe9')"


def test_a_file_that_cannot_be_read_is_a_problem_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root (CI) no permission bit stops a read, so the refusal is simulated."""
    shut = tmp_path / "shut.yaml"
    shut.write_text("name: x\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(shut))
    assert info.value.problems[0].message == "cannot read it: Permission denied"


def test_a_folder_named_as_a_file_is_named_a_folder(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").mkdir()
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(tmp_path / "exp.yaml"))
    assert info.value.problems[0].message == "a folder, not a scenario file"


def test_a_folder_named_as_a_builtin_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "relay_qa").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_scenario("relay_qa").name == "relay_qa"


def test_aliases_of_aliases_are_walked_once() -> None:
    """A file of a few lines whose aliases nest ("billion laughs") names 10**depth paths:
    validate walked each (at depth 8, minutes and gigabytes) before saying a word."""
    depth = 5
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, depth)]
    _, where = read_mapping("\n".join(lines), "laughs.yaml")
    assert len(where) < 100  # each node once: its anchor's paths, one per alias
    assert where["l4"] == 5 and where["l0.0"] == 1


def test_overrides_reach_nested_fields_and_list_items() -> None:
    s = load_scenario(
        "relay_qa",
        [
            "agents.0.count=3",
            "agents.1.groups=[a, commons]",  # (its group param names commons)
            "run.ticks=5",
            "task.params.entities=7",
            "memory.shared.eviction=fifo",
            "memory.private.capacity=4",  # a section the file leaves out
            "outputs.dir=elsewhere",
        ],
    )
    assert [e.count for e in s.agents] == [3, 8]
    assert s.agents[1].groups == ["a", "commons"]
    assert s.run.ticks == 5 and s.run.hosts == 2
    assert s.task.params["entities"] == 7
    assert s.memory.shared.eviction == "fifo" and s.memory.shared.capacity == 120
    assert s.memory.private.capacity == 4
    assert s.outputs.dir == "elsewhere"


def test_overrides_are_validated_like_the_file() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("relay_qa", ["agents.0.count=0"])
    assert [p.path for p in info.value.problems] == ["agents.0.count"]
    with pytest.raises(ScenarioError) as info:
        load_scenario("relay_qa", ["memory.shared.eviction=belady"])
    assert [p.path for p in info.value.problems] == ["memory.shared.eviction"]


def test_oracle_is_accepted_where_the_task_knows_the_future() -> None:
    for name in ("oracle", "belady"):
        s = load_scenario("capacity_stream", [f"memory.private.eviction={name}"])
        assert s.memory.private.eviction == name


def test_a_mistake_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def no_task(self: Task, *args: object, **kwargs: object) -> None:
        built.append(f"task {type(self).__name__}")

    def no_plugin(self: Registry[object], name: str, **params: object) -> object:
        built.append(f"{self.kind} {name}")
        raise AssertionError("validation must not build plug-ins")

    monkeypatch.setattr(Task, "__init__", no_task)
    monkeypatch.setattr(Registry, "create", no_plugin)
    with pytest.raises(ScenarioError):
        load_scenario("relay_qa", ["memory.shared.eviction=oracle"])
    load_scenario("relay_qa")  # valid: still nothing built
    assert built == []


# --- the real command line ------------------------------------------------------------


def hivemem(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hivemem.platform.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_validate_rejects_a_mistake_and_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(builtin_text("relay_qa").replace("ticks: 30", "tiks: 30"), encoding="utf-8")
    good = tmp_path / "good.yaml"
    good.write_text(builtin_text("relay_qa"), encoding="utf-8")
    result = hivemem("validate", str(good), str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "run.tiks (line 23): unknown key 'tiks'; did you mean 'ticks'?" in result.stderr
    assert "run.ticks (line 23): required, missing" in result.stderr
    assert f"{good}: ok (relay_qa, 12 agents, 30 ticks)" in result.stdout
    assert str(bad) not in result.stdout


def test_cli_validate_accepts_valid_files(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(builtin_text("team_insights"), encoding="utf-8")
    result = hivemem("validate", str(good), *BUILTINS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == 1 + len(BUILTINS)


def test_cli_list_shows_scenarios_and_families() -> None:
    result = hivemem("list")
    assert result.returncode == 0, result.stderr
    for name in BUILTINS:
        assert f"{name} ({name}) - " in result.stdout
    assert ", ".join(task_families()) in result.stdout
    assert task_families() == BUILTINS
    assert result.stdout.count("learned:PATH") == 2  # eviction and write


def test_committed_schema_is_current() -> None:
    """If this fails: hivemem schema -o scenarios/scenario.schema.json"""
    committed = (SCENARIOS / "scenario.schema.json").read_text(encoding="utf-8")
    assert json.loads(committed) == json_schema()
    assert committed == json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def test_cli_schema_writes_the_committed_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = hivemem("schema", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == (SCENARIOS / "scenario.schema.json").read_text(
        encoding="utf-8"
    )


def test_the_format_page_shows_relay_qa_as_it_is() -> None:
    """docs/scenarios.md shows ``relay_qa.yaml`` "in full": it must be the file."""
    page = (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")
    shown = re.search(r"`scenarios/relay_qa.yaml`, in full:\n\n```yaml\n(.*?)```", page, re.DOTALL)
    assert shown is not None, "the page lost its example"
    assert shown.group(1) == builtin_text("relay_qa")


def test_the_resolved_scenario_names_the_seed_the_store_ran_with() -> None:
    """``memory.seed`` is replaced by ``run.seed`` when a scenario runs: the run folder's
    ``scenario.yaml`` says the seed used, not the one replaced."""
    import yaml

    s = load_scenario("relay_qa", ["run.seed=3", "memory.seed=9"])
    resolved = yaml.safe_load(dump_resolved(s))
    assert resolved["memory"]["seed"] == resolved["run"]["seed"] == 3


class _BuildsNothing(RelayQA):
    """A family of one's own whose constructor raises."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise KeyError("facts")


def test_a_family_whose_constructor_raises_is_named() -> None:
    """A ``KeyError`` in a family's ``__init__`` ended the run with a traceback and
    ``stopped (error: KeyError: 'facts')``, naming no family."""
    family = f"{__name__}:_BuildsNothing"
    text = builtin_text("relay_qa").replace("family: relay_qa", f'family: "{family}"', 1)
    scenario = parse_scenario(text)  # it validates: nothing builds the task there
    with pytest.raises(ConfigError) as caught:
        scenario.make_task()
    assert str(caught.value) == f"task family {family!r}: building it raised KeyError: 'facts'"
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.details["family"] == family
