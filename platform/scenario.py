"""Scenario files: YAML validated into pydantic models, with errors that point into the file.

Structure is checked by pydantic (``extra="forbid"`` everywhere, so a misspelt key is an
error); meaning is checked next: the task family and its parameters, roles, agent types,
policy names. Every problem is reported at once, each with its path in the file (and its
line), and with a "did you mean" for misspelt names.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from hivemem.agents.base import AGENT_TYPES, AgentSpec
from hivemem.memory_bus.config import ORACLE_EVICTIONS, StoreConfig
from hivemem.memory_bus.errors import ConfigError, HivememError
from hivemem.memory_bus.policies import EVICTION_POLICIES, WRITE_POLICIES
from hivemem.scenarios.base import TASKS, Task, task_class
from pydantic import BaseModel, ConfigDict, Field, Tag, ValidationError

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Model):
    """Which task family, and its parameters (checked by the family's own model)."""

    family: str = Field(description="relay_qa | evolving_facts | team_insights | capacity_stream")
    params: dict[str, Any] = Field(default_factory=dict)


class RosterEntry(_Model):
    """``count`` agents of one role and type."""

    role: str
    count: int = Field(ge=1, le=1_000_000)
    type: str = Field("fact_memory", description='agent type by name or "module:Class"')
    groups: list[str] = Field(default_factory=list)
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

    def make_task(self, baseline: bool = False) -> Task:
        cls = task_class(self.task.family)
        return cls(
            cls.Params(**self.task.params), self.roster(baseline), self.run.seed, self.run.ticks
        )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario file."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path or '<file>'}{where}: {self.message}"


class ScenarioError(HivememError):
    """A scenario file that cannot run; lists every problem found."""

    code = "invalid_scenario"

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


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
        return path.read_text(encoding="utf-8"), str(path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        raise ScenarioError(name_or_path, [Problem("", f"no such file: {name_or_path}")])
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
    scenario = validated(Scenario, apply_overrides(raw, overrides or []), source, lines)
    problems = check_meaning(scenario)
    if problems:
        raise ScenarioError(
            source, [Problem(p.path, p.message, lines.get(p.path)) for p in problems]
        )
    return scenario


M = TypeVar("M", bound=BaseModel)


def read_mapping(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """YAML (or JSON) text that must hold a mapping, and the line of each dotted path.

    Raises:
        ScenarioError: not YAML, not a mapping at the top, a key given twice in one
            mapping, or a node that holds itself.
    """
    try:
        lines, problems = _line_map(text)
        if problems:  # checked before loading: a node that holds itself never ends
            raise ScenarioError(source, problems)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        why = getattr(exc, "problem", None) or exc
        raise ScenarioError(source, [Problem("", f"not valid YAML: {why}", line)]) from None
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise ScenarioError(source, [Problem("", f"expected a mapping at the top, got {got}")])
    return raw, lines


def validated(model: type[M], raw: dict[str, Any], source: str, lines: dict[str, int]) -> M:
    """``raw`` validated into ``model``; every problem named with its path, line and
    "did you mean" (the reporting ``hivemem validate`` and ``bus serve --config`` share).

    Raises:
        ScenarioError: each problem found.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(e, lines, model=model) for e in exc.errors()]
        raise ScenarioError(source, problems) from None


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
            problems.append(_problem(e, {}, prefix=("task", "params"), model=cls.Params))
    for i, entry in enumerate(s.agents):
        if entry.role not in cls.roles:
            problems.append(
                Problem(
                    f"agents.{i}.role", _unknown(f"role of {cls.family}", entry.role, cls.roles)
                )
            )
        try:
            AGENT_TYPES.factory(entry.type)
        except ConfigError as exc:
            problems.append(Problem(f"agents.{i}.type", str(exc)))
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
            if what == "eviction" and name in ORACLE_EVICTIONS and not cls.has_oracle():
                problems.append(
                    Problem(
                        f"memory.{tier}.eviction",
                        f"the oracle needs a task that knows its future queries; {cls.family} does not",
                    )
                )
    roles_present = {e.role for e in s.agents}
    if not roles_present & set(cls.roles):
        problems.append(
            Problem("agents", f"no agent has a role of {cls.family} ({', '.join(cls.roles)})")
        )
    return problems


def _unknown(kind: str, name: str, known: typing.Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})"


def _problem(
    err: Any, lines: dict[str, int], prefix: tuple[Any, ...] = (), model: type[BaseModel] = Scenario
) -> Problem:
    loc, _ = _walk(model, tuple(err["loc"]))
    path = ".".join(str(x) for x in prefix + loc)
    if err["type"] == "extra_forbidden":
        _, parent = _walk(model, tuple(err["loc"])[:-1])
        known = list(parent.model_fields) if _is_model(parent) else []
        msg = _unknown("key", str(loc[-1]), known) if known else f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        msg = "required, missing"
    elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
        msg = str(err["ctx"]["error"])  # without pydantic's "Value error, "
    else:
        msg = err["msg"]
    return Problem(path, msg, lines.get(path) or lines.get(".".join(path.split(".")[:-1])))


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """``loc`` as written in the file, and what it leads to inside ``model`` (a model, a
    tagged union, another annotation, or None where the file has a key the model lacks).

    Pydantic puts a tagged union member's tag after the field (the ``hashing`` of
    ``memory.embedder.hashing.hashes``); the file has no such key, so it is dropped.
    """
    written: list[Any] = []
    current: Any = model
    for part in loc:
        tags = _tags(current)
        if str(part) in tags:
            current = tags[str(part)]
            continue
        written.append(part)
        if isinstance(part, int):  # an index into a list: the list's model stays
            continue
        info = current.model_fields.get(str(part)) if _is_model(current) else None
        if info is None:
            current = None
        else:
            current = info.annotation if _tags(info.annotation) else _model_in(info.annotation)
    return tuple(written), current


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tags(annotation: Any) -> dict[str, Any]:
    """Tag -> model of a union of ``Annotated[Model, Tag(...)]`` members, else {}."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    found: dict[str, Any] = {}
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            inner, *extra = typing.get_args(arg)
            found.update({m.tag: inner for m in extra if isinstance(m, Tag)})
    return found


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None`` or ``list[X]``, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


def _line_map(text: str) -> tuple[dict[str, int], list[Problem]]:
    """Dotted path of every node in the YAML text -> its 1-based line; and the problems
    that loading hides: a key given twice in one mapping (YAML keeps the last silently),
    and a node that holds itself (an alias inside its own anchor, ``a: &x [*x]``)."""
    out: dict[str, int] = {}
    problems: list[Problem] = []
    inside: set[int] = set()  # the nodes being walked: meeting one again is a cycle

    def walk(node: Any, path: str) -> None:
        line = node.start_mark.line + 1
        if path:
            out.setdefault(path, line)
        if id(node) in inside:
            problems.append(Problem(path, "holds itself (an alias inside its own anchor)", line))
            return
        inside.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                key = f"{path}.{k.value}" if path else str(k.value)
                here = k.start_mark.line + 1
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":  # "<<": a merge
                    if k.value in first:
                        why = f"duplicate key {k.value!r} (first on line {first[k.value]})"
                        problems.append(Problem(key, why, here))
                    first.setdefault(k.value, here)
                out.setdefault(key, here)
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{path}.{i}" if path else str(i))
        inside.discard(id(node))

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return out, problems


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (editors validate YAML against it)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hivemem scenario"
    return schema


def dump_resolved(s: Scenario) -> str:
    """The scenario with every default filled in, as YAML."""
    return yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False)


def task_families() -> list[str]:
    task_class("relay_qa")  # imports the built-ins
    return TASKS.names()
