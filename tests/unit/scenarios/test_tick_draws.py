"""Every built-in family draws its ticks as the run reaches them (``TickDraws``): a long
run holds a tick or two, not the whole run, and a tick asked for again is the same."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hivemem.platform.scenario import load_scenario
from hivemem.scenarios.base import Task, TickDraws
from hivemem.scenarios.capacity_stream import CapacityStream

FAMILIES = ["relay_qa", "evolving_facts", "team_insights", "capacity_stream"]
LONG = 1_000_000  # the most ticks a scenario file may ask for


def make(family: str, ticks: int, seed: int = 3) -> Task:
    return load_scenario(family, [f"run.ticks={ticks}", f"run.seed={seed}"]).make_task()


def draws_of(task: Task) -> list[TickDraws[Any]]:
    if isinstance(task, CapacityStream):
        return list(task.streams.values())
    draws = task.draws  # type: ignore[attr-defined]
    assert isinstance(draws, TickDraws)
    return [draws]


def answers_to(obs: dict[str, Any]) -> dict[str, Any]:
    """Answers that are right for some questions and not others (so scores differ)."""
    return {
        aid: o["question"]["qid"] % 3 if "question" in o else 1 if "task" in o else None
        for aid, o in obs.items()
    }


def run(task: Task, ticks: range) -> list[str]:
    """Each tick's observations and score, as the runner asks for them."""
    out = []
    for t in ticks:
        obs = task.observe(t)
        out.append(json.dumps([obs, task.score(t, answers_to(obs))], sort_keys=True))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_a_long_run_holds_the_tick_it_is_at_not_the_run(family: str) -> None:
    """Built, a million-tick task has drawn nothing (relay_qa drew all of it up front:
    3.3 GB and 44 s before the first tick, and again for its baseline)."""
    task = make(family, LONG)
    assert all(d.next == 0 and not d.drawn for d in draws_of(task))
    run(task, range(300))
    for draws in draws_of(task):
        assert draws.first == 299 and len(draws.drawn) == 1  # only tick 299, for its score


@pytest.mark.parametrize("family", FAMILIES)
def test_a_forgotten_tick_asked_again_is_the_one_the_run_saw(family: str) -> None:
    """Past ticks are dropped; asked again (a check's second look, a re-run of a tick)
    they are drawn again from the start, the same, and the run goes on the same."""
    task = make(family, 200)
    first = run(task, range(60))
    again = run(task, range(20, 40))  # behind the run: drawn anew from tick 0
    # (tick 20's team_insights feedback is on the answers scored last, tick 59's)
    assert again[1:] == first[21:40]
    assert run(task, range(40, 60)) == first[40:60]
    fresh = make(family, 200)
    assert run(fresh, range(60)) == first


@pytest.mark.parametrize("family", FAMILIES)
def test_another_seed_draws_another_run(family: str) -> None:
    assert run(make(family, 40, seed=1), range(40)) != run(make(family, 40, seed=2), range(40))


@pytest.mark.parametrize("t", [-1, 50])
def test_a_tick_outside_the_run_is_refused(t: int) -> None:
    """Not tick ``len - 1`` (a negative index), nor one drawn past the run's end."""
    task = make("relay_qa", 50)
    with pytest.raises(IndexError, match=f"tick {t} is not a tick of this run"):
        task.observe(t)
