"""relay_qa: scouts observe facts, analysts of another group are asked about them.

An analyst never observes anything itself, so it can answer only through memory that
another agent wrote: the shared tier. Score: accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from hivemem.agents.base import AgentSpec, Observation
from hivemem.scenarios.base import TASKS, Task, TaskParams, ratio
from hivemem.scenarios.facts import ATTRIBUTES, VALUES, Key, all_keys, deal, fact, question
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
        p: RelayParams = params
        keys = all_keys(p.entities, p.attributes)
        order = self.rng.permutation(len(keys))
        self.truth = {keys[i].name: VALUES[int(self.rng.integers(p.values))] for i in order}
        self.facts: list[list[dict[str, Any]]] = []
        self.questions: list[dict[str, dict[str, Any]]] = []
        revealed: list[Key] = []
        cursor, qid = 0, 0
        scouts, analysts = self.agents_of("scout"), self.agents_of("analyst")
        for t in range(ticks):
            batch = [keys[i] for i in order[cursor : cursor + p.facts_per_tick]]
            cursor += len(batch)
            self.facts.append([fact(k, self.truth[k.name], t) for k in batch])
            asked: dict[str, dict[str, Any]] = {}
            if revealed and p.questions_per_analyst:
                for spec in analysts:
                    k = revealed[int(self.rng.integers(len(revealed)))]
                    asked[spec.agent_id] = question(k, qid)
                    qid += 1
            self.questions.append(asked)
            revealed.extend(batch)
        self.scouts = scouts

    def observe(self, t: int) -> dict[str, Observation]:
        return deal(self.facts[t], self.scouts, self.questions[t])

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        asked = self.questions[t]
        correct = sum(answers.get(aid) == self.truth[q["key"]] for aid, q in asked.items())
        answered = sum(answers.get(aid) is not None for aid in asked)
        return {"asked": len(asked), "answered": answered, "correct": correct}

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        return totals.get("correct", 0.0), totals.get("asked", 0.0)

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        return {
            "score": ratio(*self.headline(totals)),
            "answered": ratio(totals.get("answered", 0), totals.get("asked", 0)),
        }
