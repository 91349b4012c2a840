"""The agent interface, shaped for batching.

Each tick an agent first says what it wants to recall (:meth:`Agent.plan`), then acts on
what came back (:meth:`Agent.act`), answering the task and proposing writes. The host
gathers the plans of all its agents into one bus request and their writes into another,
so an agent never talks to the bus itself.

Observations and answers are plain msgpack-safe values (dicts, lists, str, numbers): they
cross Ray and land in JSONL files unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.registry import Registry

Observation = dict[str, Any]
"""What the task shows one agent at one tick (task-defined keys, msgpack-safe)."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """Who an agent is: the runner builds agents from these, on whatever host."""

    agent_id: str
    type: str
    role: str = "agent"
    groups: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Recall:
    """A read an agent asks for: the ``k`` items of ``tier``/``namespace`` nearest ``query``.

    ``as_of`` keeps only items valid at that time.
    """

    tier: str
    namespace: str
    query: str
    k: int = 5
    as_of: float | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A write an agent proposes; the tier's write policy decides what it becomes."""

    tier: str
    namespace: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    importance: float = 0.0
    valid_from: float | None = None
    valid_to: float = float("inf")
    level: int = 0


@dataclass(frozen=True, slots=True)
class Promotion:
    """Write ``parent`` on the graph tier above the nodes ``children`` (G-Memory style)."""

    namespace: str
    children: tuple[int, ...]
    parent: Proposal


@dataclass(slots=True)
class Action:
    """What an agent does in one tick: its answer to the task and its proposed writes."""

    answer: Any = None
    writes: list[Proposal] = field(default_factory=list)
    promotions: list[Promotion] = field(default_factory=list)


@runtime_checkable
class Agent(Protocol):
    """A batched agent. Built from an :class:`AgentSpec`; its memory lives on the bus."""

    spec: AgentSpec

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        """The reads this agent wants at tick ``t`` (may be empty)."""
        ...

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        """Act on the observation and the hits, one list per planned :class:`Recall`."""
        ...


class BaseAgent:
    """Convenience base: keeps the spec, plans nothing, answers nothing."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec

    @property
    def agent_id(self) -> str:
        return self.spec.agent_id

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Raise ``TypeError`` or ``ValueError`` for params this type refuses, building
        nothing: a scenario's validation calls it (if the type has it), so a bad value is
        refused with the file's line before a run starts. Here: accepts any."""

    @classmethod
    def check_groups(cls, params: dict[str, Any], groups: list[str]) -> None:
        """Raise ``ValueError`` if an agent of these params and ``groups`` would have no
        namespace on a tier it uses, building nothing; validation calls it (if the type
        has it) once ``check_params`` passed. Here: uses no tier."""

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        return []

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        return Action()


AGENT_TYPES: Registry[Agent] = Registry("agent type")
"""Agent classes by name (the class is called with ``spec=``); ``"module:Class"`` also works."""


def make_agent(spec: AgentSpec) -> Agent:
    """Build the agent a spec names."""
    return AGENT_TYPES.create(spec.type, spec=spec)
