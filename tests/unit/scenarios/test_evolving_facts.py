"""evolving_facts' measures: what each counts, scored against answers of known kinds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hivemem.platform.scenario import load_scenario
from hivemem.scenarios.evolving_facts import EvolvingFacts

Answer = Callable[[EvolvingFacts, int, dict[str, Any]], str]


def task(ticks: int = 30, seed: int = 0) -> EvolvingFacts:
    made = load_scenario("evolving_facts", [f"run.ticks={ticks}", f"run.seed={seed}"]).make_task()
    assert isinstance(made, EvolvingFacts)
    return made


def summary_of(facts: EvolvingFacts, answer: Answer) -> dict[str, float | None]:
    """The summary of a run whose askers answer each question with ``answer``."""
    totals: dict[str, float] = {}
    for t in range(facts.ticks):
        answers = {aid: answer(facts, t, q) for aid, q in facts.draws.tick(t)[1].items()}
        for key, value in facts.score(t, answers).items():
            totals[key] = totals.get(key, 0.0) + value
    return facts.summary(totals)


def newest(facts: EvolvingFacts, t: int, q: dict[str, Any]) -> str:
    """A memory that keeps only the newest value of each key (as dedup's UPDATE does)."""
    return facts.value_at(q["key"], t - 1)


def every_version(facts: EvolvingFacts, t: int, q: dict[str, Any]) -> str:
    """A memory that keeps every version and recalls the one valid then."""
    return facts.value_at(q["key"], t - 1 if q["as_of"] is None else q["as_of"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_as_of_changed_is_as_of_recall_alone(seed: int) -> None:
    """The newest values alone answer many as-of questions (keys unchanged since), never
    one whose answer differs from the current value."""
    alone = summary_of(task(seed=seed), newest)
    assert alone["current"] == 1.0
    assert alone["as_of"] is not None and 0.3 < alone["as_of"] < 0.7
    assert alone["as_of_changed"] == 0.0
    every = summary_of(task(seed=seed), every_version)
    assert every == {"score": 1.0, "current": 1.0, "as_of": 1.0, "as_of_changed": 1.0}


def test_the_existing_measures_keep_their_definition() -> None:
    """``score`` and ``as_of`` still count every as-of question (published results)."""
    facts = task()
    totals: dict[str, float] = {}
    asked: list[dict[str, Any]] = []
    for t in range(facts.ticks):
        questions = facts.draws.tick(t)[1]
        asked += questions.values()
        answers = {aid: newest(facts, t, q) for aid, q in questions.items()}
        for key, value in facts.score(t, answers).items():
            totals[key] = totals.get(key, 0.0) + value
    as_of = [q for q in asked if q["as_of"] is not None]
    assert totals["asked_current"] + totals["asked_as_of"] == len(asked)
    assert totals["asked_as_of"] == len(as_of)
    assert 0 < totals["asked_as_of_changed"] < totals["asked_as_of"]


def test_a_measure_with_nothing_asked_is_none_not_zero() -> None:
    """Questions start at tick 2: a 2-tick run asks nothing, and says so."""
    facts = task(ticks=2)
    assert summary_of(facts, newest) == {
        "score": None,
        "current": None,
        "as_of": None,
        "as_of_changed": None,
    }
    only_now = load_scenario(
        "evolving_facts", ["run.ticks=10", "task.params.as_of_fraction=0"]
    ).make_task()
    assert isinstance(only_now, EvolvingFacts)
    result = summary_of(only_now, newest)
    assert result["score"] == result["current"] == 1.0
    assert result["as_of"] is None and result["as_of_changed"] is None
