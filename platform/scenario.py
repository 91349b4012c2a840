"""Scenario files: YAML validated into pydantic models, with errors that point into the file.

Structure is checked by pydantic (``extra="forbid"`` everywhere, so a misspelt key is an
error); meaning is checked next: the task family and its parameters, roles, agent types,
policy names. Every problem is reported at once, each with its path in the file (and its
line), and with a "did you mean" for misspelt names.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from hivemem.agents.base import AGENT_TYPES, AgentSpec
from hivemem.memory_bus.config import ORACLE_EVICTIONS, ConfigModel, StoreConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.policies import EVICTION_POLICIES, WRITE_POLICIES
from hivemem.memory_bus.registry import plugin_failed
from hivemem.platform.scenario_problems import (
    Problem,
    ScenarioError,
    from_settings,
    problem_from_error,
    read_mapping,
    unknown_name,
    validated,
)
from hivemem.scenarios.base import TASKS, Task, task_class
from pydantic import Field, ValidationError, field_validator

SCHEMA_VERSION = 1


class _Model(ConfigModel):
    """Closed, frozen, and no boolean for a number (:class:`ConfigModel`)."""


class TaskSpec(_Model):
    """Which task family, and its parameters (checked by the family's own model)."""

    family: str = Field(description="relay_qa | evolving_facts | team_insights | capacity_stream")
    params: dict[str, Any] = Field(default_factory=dict)


MAX_AGENTS = 1_000_000
"""Agents a run may have, in all entries together: a run builds every agent's spec in
the driver before its first tick (twice with the baseline), and a file of many entries,
each within its own bound, asked for billions and exhausted the memory doing it."""


class RosterEntry(_Model):
    """``count`` agents of one role and type."""

    role: str
    count: int = Field(ge=1, le=MAX_AGENTS)
    type: str = Field("fact_memory", description='agent type by name or "module:Class"')
    # An empty group name passed validation, and the bus refused it at the first tick.
    groups: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)


class RunSpec(_Model):
    """How long, how seeded, how spread."""

    seed: int = Field(0, ge=0, description="the one seed: task, agents and store")
    ticks: int = Field(ge=1, le=1_000_000)
    hosts: int = Field(1, ge=1, le=1024, description="agent host actors")
    agents_per_host: int | None = Field(
        None, ge=1, description="if set, hosts = ceil(agents / agents_per_host)"
    )
    bus_shards: int = Field(
        1, ge=1, le=256, description="bus servers; namespaces are spread over them by hash"
    )
    bus_spin_us: int = Field(
        0,
        ge=0,
        le=100_000,
        description="bus servers poll without sleeping for this long after each answer, "
        "while requests come that close together (lower latency, a busy core; "
        "hivemem bus serve --spin-us)",
    )
    freeze_old_objects: bool = Field(
        True,
        description="while the run lasts, the driver's process (the task, an embedded bus) "
        "freezes what outlives a full garbage collection, so the next walks only newer "
        "objects; actor buses, alone in their processes, always do "
        "(hivemem bus serve --no-freeze-old-objects)",
    )
    num_cpus: int = Field(2, ge=1, description="CPUs of the embedded local Ray")
    baseline: bool = Field(True, description="also run the no-memory baseline agents")


class OutputSpec(_Model):
    """What a run writes."""

    dir: str = "runs"
    plots: bool = True


class Scenario(_Model):
    """A whole scenario file."""

    schema_version: Literal[1] = Field(description="format version of this file")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    task: TaskSpec
    agents: list[RosterEntry] = Field(min_length=1)
    memory: StoreConfig = Field(default_factory=StoreConfig)
    run: RunSpec
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    metrics_port: int | None = Field(None, ge=0, le=65535)

    @field_validator("agents")
    @classmethod
    def _agents_in_all(cls, agents: list[RosterEntry]) -> list[RosterEntry]:
        total = sum(entry.count for entry in agents)
        if total > MAX_AGENTS:
            raise ValueError(f"{total:,} agents in all; a run has at most {MAX_AGENTS:,}")
        return agents

    def roster(self, baseline: bool = False) -> list[AgentSpec]:
        """Every agent, in global order (the order hosts are filled in)."""
        base = task_class(self.task.family).baseline_agent if baseline else {}
        specs: list[AgentSpec] = []
        per_role: dict[str, int] = {}
        for entry in self.agents:
            kind = base.get(entry.role, base.get("*", entry.type))
            for _ in range(entry.count):
                n = per_role.get(entry.role, 0)
                per_role[entry.role] = n + 1
                specs.append(
                    AgentSpec(
                        agent_id=f"{entry.role}-{n}",
                        type=kind,
                        role=entry.role,
                        groups=tuple(entry.groups),
                        params={} if baseline else dict(entry.params),
                        seed=self.run.seed * 1_000_003 + len(specs),
                    )
                )
        return specs

    def host_count(self) -> int:
        agents = sum(e.count for e in self.agents)
        hosts = self.run.hosts
        if self.run.agents_per_host:
            hosts = -(-agents // self.run.agents_per_host)
        return max(1, min(hosts, agents))

    def store_config(self) -> StoreConfig:
        """The store's configuration as a run makes it: ``memory``, its seed ``run.seed``."""
        return self.memory.model_copy(update={"seed": self.run.seed})

    def make_task(self, baseline: bool = False) -> Task:
        """The task, built for this roster (the baseline's with ``baseline``).

        Raises:
            ConfigError: the family's constructor raised (a family of one's own: a
                ``KeyError`` in its ``__init__`` ended a run with a traceback naming no
                family), naming the family; its error is the cause.
        """
        cls = task_class(self.task.family)
        roster, family = self.roster(baseline), self.task.family
        try:
            return cls(cls.Params(**self.task.params), roster, self.run.seed, self.run.ticks)
        except Exception as exc:
            plugin_failed(f"task family {family!r}: building it", exc, family=family)


# --- loading ---------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """Names of the scenarios shipped under ``scenarios/``."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("hivemem.scenarios").iterdir()
        if p.name.endswith(".yaml")
    )


def resolve_path(name_or_path: str) -> tuple[str, str]:
    """The text of a scenario given a path or a built-in name, and what to call it."""
    path = Path(name_or_path)
    if path.is_file():
        return _read_text(path), str(path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        why = "a folder, not a scenario file" if path.is_dir() else f"no such file: {name_or_path}"
        raise ScenarioError(name_or_path, [Problem("", why)])
    ref = resources.files("hivemem.scenarios") / f"{name_or_path}.yaml"
    if not ref.is_file():
        known = builtin_names()
        close = difflib.get_close_matches(name_or_path, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ScenarioError(
            name_or_path,
            [
                Problem(
                    "",
                    f"no file and no built-in scenario {name_or_path!r}{hint} (built-in: {', '.join(known)})",
                )
            ],
        )
    return ref.read_text(encoding="utf-8"), f"builtin:{name_or_path}"


def _read_text(path: Path) -> str:
    """The text of a scenario file; one that cannot be read, or is not UTF-8, is a
    :class:`ScenarioError` (a traceback otherwise)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        why = f"cannot read it: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})"
    raise ScenarioError(str(path), [Problem("", why)]) from None


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """Apply ``key.sub=value`` settings (values parsed as YAML; list items by index)."""
    for setting in overrides:
        if "=" not in setting:
            raise ScenarioError("--set", [Problem(setting, "expected key=value")])
        key, text = setting.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(
                        "--set",
                        [
                            Problem(
                                key,
                                f"{part!r} is not an index of the list at {'.'.join(parts[:i])}",
                            )
                        ],
                    )
                idx: Any = int(part)
            elif isinstance(node, dict):
                idx = part
            else:
                raise ScenarioError(
                    "--set", [Problem(key, f"{'.'.join(parts[:i])} is not a mapping")]
                )
            if last:
                try:
                    node[idx] = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    why = getattr(exc, "problem", None) or exc
                    raise ScenarioError(
                        "--set", [Problem(key, f"value {text!r} is not valid YAML: {why}")]
                    ) from None
            else:
                if isinstance(node, dict) and idx not in node:
                    node[idx] = {}
                node = node[idx]
    return raw


def load_scenario(name_or_path: str, overrides: list[str] | None = None) -> Scenario:
    """Read, override, validate. Raises :class:`ScenarioError` listing every problem."""
    text, source = resolve_path(name_or_path)
    return absolute_checkpoints(parse_scenario(text, source, overrides or []))


LEARNED = "learned:"


def absolute_checkpoints(s: Scenario) -> Scenario:
    """``learned:PATH`` policies with PATH made absolute (from the current directory).

    The bus reads the checkpoint in its own process (a Ray actor's working directory is
    not the caller's), and the run folder's resolved scenario should say which file ran.
    """
    update: dict[str, Any] = {}
    for tier in ("private", "shared", "graph"):
        cfg = getattr(s.memory, tier)
        changes = {
            field: LEARNED + str(Path(name[len(LEARNED) :]).absolute())
            for field, name in (("eviction", cfg.eviction), ("write_policy", cfg.write_policy))
            if name.startswith(LEARNED) and not Path(name[len(LEARNED) :]).is_absolute()
        }
        if changes:
            update[tier] = cfg.model_copy(update=changes)
    if not update:
        return s
    return s.model_copy(update={"memory": s.memory.model_copy(update=update)})


def parse_scenario(
    text: str, source: str = "<string>", overrides: list[str] | None = None
) -> Scenario:
    """Validate scenario YAML text (see :func:`load_scenario`)."""
    raw, lines = read_mapping(text, source)
    settings = overrides or []
    try:
        scenario = validated(Scenario, apply_overrides(raw, settings), source, lines)
    except ScenarioError as exc:
        raise ScenarioError(exc.source, from_settings(exc.problems, settings)) from None
    problems = [Problem(p.path, p.message, lines.get(p.path)) for p in check_meaning(scenario)]
    if problems:
        raise ScenarioError(source, from_settings(problems, settings))
    return scenario


def check_meaning(s: Scenario) -> list[Problem]:
    """What pydantic cannot see: names that must exist and fit together."""
    problems: list[Problem] = []
    try:
        cls = task_class(s.task.family)
    except (ConfigError, TypeError) as exc:  # TypeError: "module:Class" that is not a Task
        return [Problem("task.family", str(exc))]
    try:
        cls.Params(**s.task.params)
    except ValidationError as exc:
        for e in exc.errors():
            problems.append(problem_from_error(e, {}, prefix=("task", "params"), model=cls.Params))
    for i, entry in enumerate(s.agents):
        if entry.role not in cls.roles:
            problems.append(
                Problem(
                    f"agents.{i}.role", unknown_name(f"role of {cls.family}", entry.role, cls.roles)
                )
            )
        try:
            agent_type = AGENT_TYPES.factory(entry.type)
        except ConfigError as exc:
            problems.append(Problem(f"agents.{i}.type", str(exc)))
            continue
        check_params = getattr(agent_type, "check_params", None)  # optional: builds nothing
        check_groups = getattr(agent_type, "check_groups", None)  # optional, as check_params
        try:
            if check_params is not None:
                check_params(dict(entry.params))
        except (TypeError, ValueError) as exc:
            message = f"bad parameters for agent type {entry.type!r}: {exc}"
            problems.append(Problem(f"agents.{i}.params", message))
        else:
            try:
                if check_groups is not None:
                    check_groups(dict(entry.params), list(entry.groups))
            except ValueError as exc:
                problems.append(Problem(f"agents.{i}.groups", f"agent type {entry.type!r}: {exc}"))
        outside = _group_outside(entry, s.memory.access.public_namespaces)
        if outside:
            problems.append(Problem(f"agents.{i}.params.group", outside))
    for tier in ("private", "shared", "graph"):
        cfg = getattr(s.memory, tier)
        for what, reg, name, params in (
            ("eviction", EVICTION_POLICIES, cfg.eviction, cfg.eviction_params),
            ("write_policy", WRITE_POLICIES, cfg.write_policy, cfg.write_params),
        ):
            try:
                reg.check(name, **params)
            except ConfigError as exc:
                problems.append(Problem(f"memory.{tier}.{what}", str(exc)))
            if what == "eviction" and name in ORACLE_EVICTIONS:
                refused = _oracle_refused(cls, tier)
                if refused:
                    problems.append(Problem(f"memory.{tier}.eviction", refused))
    roles_present = {e.role for e in s.agents}
    if not roles_present & set(cls.roles):
        problems.append(
            Problem("agents", f"no agent has a role of {cls.family} ({', '.join(cls.roles)})")
        )
    return problems


def _group_outside(entry: RosterEntry, public: list[str]) -> str | None:
    """Why an agent's ``group`` param (the shared and graph namespace it writes and
    reads) is one the bus will refuse it, or None: a group the agent is not in and no
    public namespace. The run stopped at its first tick with an access error."""
    group = entry.params.get("group")
    if not isinstance(group, str) or group in entry.groups or group in public:
        return None
    return (
        f"group {group!r} is not one of the agent's groups ({', '.join(entry.groups) or 'none'})"
        " nor a public namespace: the bus would refuse it every access there"
    )


def _oracle_refused(cls: type[Task], tier: str) -> str | None:
    """Why the task family ``cls`` cannot drive the oracle on ``tier``, or None."""
    if not cls.has_oracle():
        return f"the oracle needs a task that knows its future queries; {cls.family} does not"
    if tier not in cls.oracle_tiers:
        tiers = ", ".join(cls.oracle_tiers)
        return f"{cls.family} foresees the queries of its {tiers} tier only, not of {tier}"
    return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (editors validate YAML against it)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hivemem scenario"
    return schema


def dump_resolved(s: Scenario) -> str:
    """The scenario with every default filled in, as YAML; ``memory.seed`` is
    ``run.seed``, which replaces it when the scenario runs."""
    ran = s.model_copy(update={"memory": s.store_config()})
    return yaml.safe_dump(ran.model_dump(mode="json"), sort_keys=False)


def task_families() -> list[str]:
    task_class("relay_qa")  # imports the built-ins
    return TASKS.names()
