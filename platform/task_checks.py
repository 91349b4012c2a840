""":func:`check_task_family`: a task family of one's own, run by the real runner for a few
ticks of a scenario, and checked for what a run relies on.

The runner is handed a :class:`CheckedTask` in place of the scenario's task: it builds
the family's task, and a second one from the same parameters, roster and seed, and
answers the runner with the first's answers, once each has passed the run's own check
and its own: the second task asked the same, the answers scored left alone, ``summary``
and ``headline`` in agreement. The runner asks it as it asks any task (the driver's
metrics on, so it asks ``headline`` and ``outcome_kinds`` too).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import cloudpickle
from hivemem.agents.base import AGENT_TYPES, AgentSpec, Observation
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.item import Item
from hivemem.memory_bus.server import serving_at
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.failures import ContractFailure, expect
from hivemem.platform.host_pool import LocalHosts
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.plugin_runs import (
    ScenarioLike,
    as_scenario,
    pickled,
    promising,
    run_checked,
    same,
)
from hivemem.platform.scenario import Scenario
from hivemem.scenarios.base import Task, ratio, task_class
from hivemem.scenarios.calls import headline_of, observe_of, score_of, summary_of

NOT_AGAIN = "for another task built from the same parameters, roster and seed"


def check_task_family(scenario: ScenarioLike, *, ticks: int = 10) -> dict[str, float]:
    """Raise ``ContractFailure`` unless the scenario's task family keeps what a run
    relies on, tick after tick.

    The scenario runs for ``ticks`` ticks in this process with its own agents, and
    again with the family's baseline agents (``hivemem compare`` runs them), each run
    checked alike; a second task, built from the same parameters, roster and seed, is
    asked the same as the first at every tick.

    Checked: every ``observe``, ``score``, ``summary``, ``headline`` and
    ``outcome_kinds`` answers in protocol (the run's own checks, as the runner and
    the driver's metrics ask them); the observations survive cloudpickle (Ray ships
    them to the hosts); the second task answers as the first (the runs of one seed are
    one run, and RL workers build their tasks anew); ``score`` leaves the answers as
    they were; ``summary``'s ``score`` is the ratio of ``headline`` over the totals
    (None while no question was asked), and a run's ``headline`` is the sum of its
    ticks'; ``agents_of`` answers the roster's agents of a role, in order; the
    baseline agents are types a host can build; and, for a family with an oracle,
    ``next_use`` answers each stored item a time not before ``now`` (or inf), the
    same when asked again and by the second task.

    Args:
        scenario: A built-in name, a file, or a
            :class:`~hivemem.platform.scenario.Scenario` naming the family.
        ticks: Ticks run.

    Returns:
        The summed counters of the run with the scenario's agents (how much of the
        family it exercised).
    """
    s = as_scenario(scenario, ticks)
    cls = task_class(s.task.family)
    _check_baseline_types(cls)
    totals = _checked_run(s, cls, baseline=False)
    _checked_run(s, cls, baseline=True)
    return totals


def _check_baseline_types(cls: type[Task]) -> None:
    for role, name in cls.baseline_agent.items():
        expect(
            role == "*" or role in cls.roles,
            f"baseline_agent names a role {role!r} the family has not (its roles: "
            f"{sorted(cls.roles)})",
        )
        try:
            AGENT_TYPES.factory(name)
        except ConfigError as exc:
            raise ContractFailure(f"baseline_agent of role {role!r}: {exc}") from exc


def _checked_run(s: Scenario, cls: type[Task], baseline: bool) -> dict[str, float]:
    """Run ``s`` with a :class:`CheckedTask`; the summed counters of its ticks."""
    which = " (baseline agents)" if baseline else ""
    built: list[CheckedTask] = []
    pools: list[LocalHosts] = []

    def task() -> CheckedTask:
        built.append(CheckedTask(s, baseline, which))
        return built[-1]

    def pool(*args: Any, **kwargs: Any) -> LocalHosts:
        pools.append(LocalHosts(*args, **kwargs))
        return pools[-1]

    def ticked(t: int, row: dict[str, Any]) -> None:
        if cls.has_oracle():
            _check_next_use(built[0], pools[0].address, t, which)

    run_checked(s, which=which, task=task, pool=pool, on_tick=ticked, metrics=DriverMetrics())
    return built[0].totals


class CheckedTask(Task):
    """The family's task, checked as the runner asks it (see the module's docstring).

    Args:
        scenario: The scenario whose task it is.
        baseline: Its roster is of the family's baseline agents.
        which: Said after the tick in a failure.
    """

    def __init__(self, scenario: Scenario, baseline: bool, which: str) -> None:
        self.inner, self.twin = scenario.make_task(baseline), scenario.make_task(baseline)
        inner = self.inner
        super().__init__(inner.params, inner.roster, inner.seed, inner.ticks)
        self.name, self.which = scenario.task.family, which
        self.ids = {spec.agent_id for spec in self.roster}
        self.totals: dict[str, float] = {}
        self.counted = (0.0, 0.0)  # the ticks' headlines, summed
        self.t = 0
        with promising():
            _check_roster(inner)

    def agents_of(self, role: str) -> list[AgentSpec]:
        return self.inner.agents_of(role)

    def observe(self, t: int) -> dict[str, Observation]:
        self.t = t
        with promising():
            obs = observe_of(self.inner, self.name, t, self.ids)
            back = cloudpickle.loads(pickled(obs, f"{self._tick}: observe's answer"))
            expect(
                same(back, obs),
                f"{self._tick}: observe answered {obs!r:.200}, {back!r:.200} after "
                "cloudpickle (Ray ships observations to the hosts so)",
            )
            again = observe_of(self.twin, self.name, t, self.ids)
            expect(
                same(again, obs),
                f"{self._tick}: observe answered {obs!r:.200}, and {again!r:.200} {NOT_AGAIN}",
            )
        return obs

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        with promising():
            before = copy.deepcopy(answers)
            parts = score_of(self.inner, self.name, t, answers)
            expect(
                same(answers, before),
                f"{self._tick}: score changed the answers it was given, from "
                f"{before!r:.200} to {answers!r:.200}",
            )
            again = score_of(self.twin, self.name, t, answers)
            expect(
                same(again, parts),
                f"{self._tick}: score answered {parts!r:.200}, and {again!r:.200} {NOT_AGAIN}, "
                "given the same answers",
            )
            correct, questions = headline_of(self.inner, self.name, parts)
        self.counted = (self.counted[0] + correct, self.counted[1] + questions)
        for k, v in parts.items():
            self.totals[k] = self.totals.get(k, 0.0) + float(v)
        return parts

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        with promising():
            summary = summary_of(self.inner, self.name, totals)
            self._check_summary(summary, totals)
        return summary

    def _check_summary(self, summary: dict[str, float | None], totals: dict[str, float]) -> None:
        correct, questions = headline_of(self.inner, self.name, totals)
        expect(
            0 <= correct <= questions,
            f"{self._tick}: headline answered {correct} correct of {questions} questions",
        )
        counted = self.counted
        expect(
            math.isclose(correct, counted[0], abs_tol=1e-9)
            and math.isclose(questions, counted[1], abs_tol=1e-9),
            f"{self._tick}: headline of the totals answered ({correct}, {questions}), the "
            f"ticks' headlines sum to ({counted[0]}, {counted[1]}): the driver exports their sum",
        )
        want = ratio(correct, questions)
        score = summary["score"]
        expect(
            (score is None and want is None)
            or (score is not None and want is not None and math.isclose(score, want)),
            f"{self._tick}: summary answered score {score!r}; headline says {correct} of "
            f"{questions} ({want!r}) over the totals {totals!r:.200}",
        )

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        return self.inner.headline(totals)

    def outcome_kinds(self, parts: Mapping[str, float]) -> dict[str, float]:
        return self.inner.outcome_kinds(parts)

    def next_use(self, item: Item, now: float) -> float:
        return self.inner.next_use(item, now)

    @property
    def _tick(self) -> str:
        return f"tick {self.t}{self.which}"


def _check_roster(task: Task) -> None:
    for role in [*task.roles, "not a role of the family"]:
        want = [spec for spec in task.roster if spec.role == role]
        got = task.agents_of(role)
        expect(
            got == want,
            f"agents_of({role!r}) answered {got!r:.300}; the roster's agents of that role "
            f"are {want!r:.300}",
        )


def _check_next_use(task: CheckedTask, address: str, t: int, which: str) -> None:
    """``next_use`` of the items the bus holds on the tiers the family's oracle
    foresees, at ``now = t``, asked of the task twice and of its twin."""
    now = float(t)
    tiers = task.inner.oracle_tiers
    for item in _stored(address, tiers):
        first = task.inner.next_use(item, now)
        asked = f"tick {t}{which}: next_use(item {item.id} {item.text!r:.80}, now={now})"
        expect(
            isinstance(first, Real) and not isinstance(first, bool) and first >= now,
            f"{asked} answered {first!r}: it must be a time not before now, or inf",
        )
        again, other = task.inner.next_use(item, now), task.twin.next_use(item, now)
        expect(
            again == first == other,
            f"{asked} answered {first!r}, then {again!r}, and {other!r} {NOT_AGAIN}",
        )


def _stored(address: str, tiers: tuple[str, ...], most: int = 100) -> list[Item]:
    """Up to ``most`` items the embedded bus at ``address`` (each shard's) holds on
    ``tiers``, read between two of its requests."""

    def read(store: MemoryStore) -> list[Item]:
        return [
            item
            for tier in tiers
            for ns in store.tier(tier).namespaces.values()
            for item in ns.items.values()
        ][:most]

    items: list[Item] = []
    for shard in address.split(","):
        server = serving_at(shard)
        if server is not None:
            items.extend(server.inspect(read))
    return items[:most]
