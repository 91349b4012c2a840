"""relay_qa: scouts observe facts, analysts of another group are asked about them.

An analyst never observes anything itself, so it can answer only through memory that
another agent wrote: the shared tier. Score: accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from hivemem.agents.base import AgentSpec, Observation
from hivemem.scenarios.base import TASKS, Task, TaskParams, TickDraws, ratio
from hivemem.scenarios.facts import (
    ATTRIBUTES,
    VALUES,
    FactTick,
    Key,
    all_keys,
    deal,
    fact,
    question,
)
from pydantic import Field


class RelayParams(TaskParams):
    entities: int = Field(30, ge=1, le=100_000)
    attributes: int = Field(3, ge=1, le=len(ATTRIBUTES))
    values: int = Field(8, ge=2, le=len(VALUES))
    facts_per_tick: int = Field(6, ge=1)
    questions_per_analyst: int = Field(1, ge=0, le=1, description="questions per analyst a tick")


@TASKS.register("relay_qa")
class RelayQA(Task):
    family = "relay_qa"
    Params = RelayParams
    roles: ClassVar[dict[str, str]] = {"scout": "observes facts", "analyst": "is asked about them"}
    baseline_agent: ClassVar[dict[str, str]] = {"*": "no_memory"}

    def __init__(self, params: Any, roster: list[AgentSpec], seed: int, ticks: int) -> None:
        super().__init__(params, roster, seed, ticks)
        self.scouts = self.agents_of("scout")
        self.draws = _RelayDraws(params, self.agents_of("analyst"), seed, ticks)

    def observe(self, t: int) -> dict[str, Observation]:
        self.draws.forget_before(t)
        facts, asked = self.draws.tick(t)
        return deal(facts, self.scouts, asked)

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        asked = self.draws.tick(t)[1]
        truth = self.draws.truth
        correct = sum(answers.get(aid) == truth[q["key"]] for aid, q in asked.items())
        answered = sum(answers.get(aid) is not None for aid in asked)
        return {"asked": len(asked), "answered": answered, "correct": correct}

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        return totals.get("correct", 0.0), totals.get("asked", 0.0)

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        return {
            "score": ratio(*self.headline(totals)),
            "answered": ratio(totals.get("answered", 0), totals.get("asked", 0)),
        }


class _RelayDraws(TickDraws[FactTick]):
    """relay_qa's ticks: every key's value and the order keys are revealed in are drawn
    first, then, tick by tick, the question each analyst is asked about a key revealed
    before that tick."""

    def __init__(self, p: RelayParams, analysts: list[AgentSpec], seed: int, ticks: int) -> None:
        self.p, self.analysts, self.seed = p, analysts, seed
        self.keys = all_keys(p.entities, p.attributes)
        super().__init__(ticks)

    def _reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.order = self.rng.permutation(len(self.keys))
        self.truth = {
            self.keys[i].name: VALUES[int(self.rng.integers(self.p.values))] for i in self.order
        }
        self.revealed: list[Key] = []
        self.cursor = self.qid = 0

    def _draw(self, t: int) -> FactTick:
        p, keys = self.p, self.keys
        batch = [keys[i] for i in self.order[self.cursor : self.cursor + p.facts_per_tick]]
        self.cursor += len(batch)
        facts = [fact(k, self.truth[k.name], t) for k in batch]
        asked: dict[str, dict[str, Any]] = {}
        if self.revealed and p.questions_per_analyst:
            for spec in self.analysts:
                k = self.revealed[int(self.rng.integers(len(self.revealed)))]
                asked[spec.agent_id] = question(k, self.qid)
                self.qid += 1
        self.revealed.extend(batch)
        return facts, asked
