"""What a task family is: it shows agents observations, scores their answers, and says why.

A task is built from its validated parameters, the agent roster and a seed, and is
deterministic given those. The runner calls :meth:`Task.observe` and :meth:`Task.score`
once per tick; nothing in a task depends on how agents are spread over hosts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from hivemem.agents.base import AgentSpec, Observation
from hivemem.memory_bus.config import ConfigModel
from hivemem.memory_bus.item import Item
from hivemem.memory_bus.registry import Registry


class TaskParams(ConfigModel):
    """Base of every family's parameters: unknown keys are errors, and so is a boolean
    for a number (:class:`~hivemem.memory_bus.config.ConfigModel`)."""


class Task(ABC):
    """One task family.

    Class attributes:
        family: The name scenario files use.
        Params: The pydantic model of its ``task.params``.
        roles: Roles the roster may use, with a one-line meaning each.
        baseline_agent: The no-memory agent type, by role (``"*"`` for all).
        score_name: What the main score measures.
    """

    family: ClassVar[str]
    Params: ClassVar[type[TaskParams]]
    roles: ClassVar[dict[str, str]]
    baseline_agent: ClassVar[dict[str, str]]
    score_name: ClassVar[str] = "accuracy"
    oracle_tiers: ClassVar[tuple[str, ...]] = ("private", "shared", "graph")
    """The tiers whose items :meth:`next_use` can place in the future: the oracle is
    refused on the others (where it would see no future at all)."""

    def __init__(self, params: TaskParams, roster: list[AgentSpec], seed: int, ticks: int) -> None:
        self.params = params
        self.roster = roster
        self.seed = seed
        self.ticks = ticks
        self.rng = np.random.default_rng(seed)
        self.by_role: dict[str, list[AgentSpec]] = {}
        for spec in roster:
            self.by_role.setdefault(spec.role, []).append(spec)

    def agents_of(self, role: str) -> list[AgentSpec]:
        """Agents of a role, in roster order (empty if none)."""
        return self.by_role.get(role, [])

    @abstractmethod
    def observe(self, t: int) -> dict[str, Observation]:
        """Observations at tick ``t``, keyed by agent id (agents with nothing to do omitted)."""

    @abstractmethod
    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        """Score the answers of tick ``t``; returns this tick's counters (summable)."""

    @abstractmethod
    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        """Final scores from the summed counters; ``score`` is the headline, the ratio
        of :meth:`headline`. A measure of questions none of which was asked (yet) is
        None, not 0."""

    @abstractmethod
    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        """The correct answers and the questions that ``score`` is the ratio of, from
        summed counters (one tick's or a whole run's: they add up).

        The driver exports them as ``hivemem_driver_correct_total`` and
        ``hivemem_driver_questions_total``: summing parts by name cannot say which they
        are, as some parts count a subset of others (evolving_facts' ``*_as_of_changed``)
        and some are split by episode (team_insights).
        """

    def outcome_kinds(self, parts: Mapping[str, float]) -> dict[str, float]:
        """A tick's score parts under names from a small fixed set, for the driver's
        ``hivemem_driver_task_outcomes_total{kind}`` (every name is a series for the
        life of the driver). The parts as they are, unless a task's names grow with the
        run, as team_insights' per-episode ones do."""
        return dict(parts)

    def next_use(self, item: Item, now: float) -> float:
        """Belady's oracle: the tick at which ``item`` is next needed (inf: never).

        Only families that know their future queries override this.
        """
        raise NotImplementedError(f"{self.family} cannot foresee its queries")

    @classmethod
    def has_oracle(cls) -> bool:
        return cls.next_use is not Task.next_use


T = TypeVar("T")


class TickDraws(ABC, Generic[T]):
    """A task's random draws, a tick at a time, in order, as the run reaches them.

    Drawing a long run up front held every tick of it before the first one ran (relay_qa
    at a million ticks: 3.3 GB and 44 s, twice with its baseline). Here a tick is drawn
    when first asked for and dropped once the run has moved past it
    (:meth:`forget_before`); a tick asked for again after that is drawn again from the
    start (:meth:`restart`), so the draws are always those of drawing everything up front
    from the same seed, in the same order. Subclasses say how to start over
    (:meth:`_reset`, which seeds their generator anew) and how to draw the next tick
    (:meth:`_draw`).

    Args:
        ticks: Ticks in the run (none is drawn past them).
    """

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.drawn: list[T] = []  # ticks first .. next - 1
        self.first = 0  # the tick drawn[0] is
        self.next = 0  # the next tick to draw
        self.restart()

    @abstractmethod
    def _reset(self) -> None:
        """Back to before tick 0: the generator seeded anew, what the draws keep cleared."""

    @abstractmethod
    def _draw(self, t: int) -> T:
        """Draw tick ``t``, the one after the last drawn."""

    def restart(self) -> None:
        """Forget every tick drawn; the next :meth:`tick` draws from tick 0 again."""
        self._reset()
        self.drawn.clear()
        self.first = self.next = 0

    def tick(self, t: int) -> T:
        """Tick ``t`` (drawn now if need be; drawn again from the start if forgotten).

        Raises:
            IndexError: ``t`` is not a tick of the run.
        """
        if not 0 <= t < self.ticks:
            raise IndexError(f"tick {t} is not a tick of this run (0..{self.ticks - 1})")
        if t < self.first:
            self.restart()
        while self.next <= t:
            self.draw()
        return self.drawn[t - self.first]

    def draw(self) -> None:
        """Draw the next tick."""
        self.drawn.append(self._draw(self.next))
        self.next += 1

    def forget_before(self, t: int) -> None:
        """Drop the ticks before ``t`` (the run is past them)."""
        drop = min(t, self.next) - self.first
        if drop > 0:
            del self.drawn[:drop]
            self.first += drop


def ratio(num: float, den: float) -> float | None:
    """``num / den``; None when nothing was asked (``den`` 0): no score, rather than 0."""
    return float(num) / float(den) if den else None


TASKS: Registry[Task] = Registry("task family")
"""Task families by name."""


def task_class(family: str) -> type[Task]:
    """The class of a family (registered by importing :mod:`hivemem.scenarios.families`)."""
    from hivemem.scenarios import families  # noqa: F401  (registers the built-ins)

    factory = TASKS.factory(family)
    if not (isinstance(factory, type) and issubclass(factory, Task)):
        raise TypeError(f"task family {family!r} is not a Task subclass")
    return factory
