"""check_task_family: every built-in task family passes it, and each kind of broken
family fails it, saying what it did.

The broken families are defined here, at the top level, so that a scenario can name
them ``"module:Class"``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from hivemem.agents.base import AgentSpec, Observation
from hivemem.memory_bus.item import Item
from hivemem.memory_bus.testing import ContractFailure
from hivemem.platform.scenario import Scenario, load_scenario, task_families
from hivemem.platform.testing import check_task_family
from hivemem.scenarios.base import ratio, task_class
from hivemem.scenarios.capacity_stream import CapacityStream
from hivemem.scenarios.relay_qa import RelayQA


def test_every_built_in_family_has_its_scenario() -> None:
    """Every family hivemem registers (other tests of a worker may register theirs)."""
    built_in = [f for f in task_families() if task_class(f).__module__.startswith("hivemem.")]
    assert built_in == ["capacity_stream", "evolving_facts", "relay_qa", "team_insights"]


@pytest.mark.parametrize(
    "family", ["capacity_stream", "evolving_facts", "relay_qa", "team_insights"]
)
def test_the_built_in_task_families_keep_the_contract(family: str) -> None:
    totals = check_task_family(family, ticks=6)
    correct, questions = load_scenario(family).make_task().headline(totals)
    assert 0 < correct <= questions  # the run asked, and its agents answered some right


def as_family(kind: type, base: str = "relay_qa") -> Scenario:
    """The built-in scenario ``base`` with ``kind`` as its task family."""
    s = load_scenario(base)
    task = s.task.model_copy(update={"family": f"{kind.__module__}:{kind.__qualname__}"})
    return s.model_copy(update={"task": task})


class ScoresNothingAsZero(RelayQA):
    """Scores 0 while nothing was asked (None is the contract: no score yet)."""

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        return {**super().summary(totals), "score": ratio(*self.headline(totals)) or 0.0}


class HeadlinesARatio(RelayQA):
    """Answers its accuracy as the headline: the ticks' headlines do not add up."""

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        asked = totals.get("asked", 0.0)
        return (totals.get("correct", 0.0) / asked, 1.0) if asked else (0.0, 0.0)

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        correct, asked = totals.get("correct", 0.0), totals.get("asked", 0.0)
        return {"score": ratio(correct, asked)}


class AsksAtRandom(RelayQA):
    """Picks which analyst is asked as it observes, with Python's unseeded random."""

    def observe(self, t: int) -> dict[str, Observation]:
        obs = super().observe(t)
        asked = [aid for aid in obs if "question" in obs[aid]]
        if asked:
            del obs[random.choice(asked)]["question"]
        return obs


class TakesTheAnswers(RelayQA):
    """Pops each answer it scores from the dict it is given."""

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        parts = super().score(t, answers)
        for aid in self.draws.tick(t)[1]:
            answers.pop(aid, None)
        return parts


class CountsHits(RelayQA):
    """Counts the answers it scored under ``hits``, a column the runner writes itself."""

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        parts = super().score(t, answers)
        return {**parts, "hits": parts["correct"]}


class NewestFirst(RelayQA):
    """``agents_of`` answers the agents of a role newest first, not in roster order."""

    def agents_of(self, role: str) -> list[AgentSpec]:
        return super().agents_of(role)[::-1]


class ObservesLazily(RelayQA):
    """Hands a scout its facts as a generator."""

    def observe(self, t: int) -> dict[str, Observation]:
        obs = super().observe(t)
        for o in obs.values():
            if "facts" in o:
                o["facts"] = (f for f in o["facts"])
        return obs


class MisspelledBaseline(RelayQA):
    """Names a baseline agent type no registry has."""

    baseline_agent: ClassVar[dict[str, str]] = {"*": "no_memroy"}


class ForgetsNever(CapacityStream):
    """Answers -1 for an item never needed again (inf is the contract)."""

    def next_use(self, item: Item, now: float) -> float:
        when = super().next_use(item, now)
        return -1.0 if when == float("inf") else when


NOT_AGAIN = "for another task built from the same parameters, roster and seed"
BROKEN: list[tuple[type, str, str]] = [
    (
        ScoresNothingAsZero,
        "relay_qa",
        r"tick 0: summary answered score 0\.0; headline says 0\.0 of 0\.0 \(None\)",
    ),
    (
        HeadlinesARatio,
        "relay_qa",
        r"tick 2: headline of the totals answered \(1\.0, 1\.0\), the ticks' headlines sum "
        r"to \(2\.0, 2\.0\)",
    ),
    (AsksAtRandom, "relay_qa", rf"tick 1: observe answered .*, and .* {NOT_AGAIN}"),
    (
        TakesTheAnswers,
        "relay_qa",
        r"tick 1: score changed the answers it was given, from \{'scout-0'",
    ),
    (
        CountsHits,
        "relay_qa",
        r"tick 0: task family '.*:CountsHits': score answered a counter named 'hits', a "
        "column the runner writes itself",
    ),
    (
        NewestFirst,
        "relay_qa",
        r"agents_of\('scout'\) answered \[AgentSpec\(agent_id='scout-3'.*; the roster's agents "
        r"of that role are \[AgentSpec\(agent_id='scout-0'",
    ),
    (
        ObservesLazily,
        "relay_qa",
        r"tick 0: observe's answer cannot be pickled \(Ray sends it between processes so\): "
        ".*generator",
    ),
    (
        MisspelledBaseline,
        "relay_qa",
        r"baseline_agent of role '\*': unknown agent type 'no_memroy'.*no_memory",
    ),
    (
        ForgetsNever,
        "capacity_stream",
        r"tick \d+: next_use\(item \d+ .*, now=\d+\.0\) answered -1\.0: it must be a time "
        "not before now, or inf",
    ),
]


@pytest.mark.parametrize(("kind", "base", "said"), BROKEN, ids=[k.__name__ for k, _, _ in BROKEN])
def test_a_family_breaking_the_contract_fails_it_saying_how(
    kind: type, base: str, said: str
) -> None:
    random.seed(3)
    with pytest.raises(ContractFailure, match=said):
        check_task_family(as_family(kind, base), ticks=6)
