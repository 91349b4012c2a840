"""evolving_facts: attributes change over time; questions ask the value now or at time t.

Observers see every change as it happens; askers are asked either the current value or
the value at an earlier tick. A memory that keeps only the newest value answers "now"
and fails "as of"; one that keeps every value but cannot tell old from new fails "now".
Score: accuracy, split into ``current`` and ``as_of``. Many an as-of question asks about
a key that has not changed since (its answer is the current value, which a memory of
the newest values alone gets right), so ``as_of_changed`` is the accuracy on the as-of
questions whose answer differs from the current value: as-of recall alone. Each is
None while no question of its kind was asked.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from hivemem.agents.base import AgentSpec, Observation
from hivemem.scenarios.base import TASKS, Task, TaskParams, TickDraws, ratio
from hivemem.scenarios.facts import ATTRIBUTES, VALUES, FactTick, all_keys, deal, fact, question
from pydantic import Field


class EvolvingParams(TaskParams):
    entities: int = Field(12, ge=1, le=100_000)
    attributes: int = Field(2, ge=1, le=len(ATTRIBUTES))
    values: int = Field(10, ge=2, le=len(VALUES))
    changes_per_tick: int = Field(3, ge=0)
    as_of_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of as-of questions")
    redundancy: int = Field(
        1, ge=1, description="observers that see (and propose) each change: duplicate writes"
    )


@TASKS.register("evolving_facts")
class EvolvingFacts(Task):
    family = "evolving_facts"
    Params = EvolvingParams
    roles: ClassVar[dict[str, str]] = {
        "observer": "sees every change",
        "asker": "is asked current or past values",
    }
    baseline_agent: ClassVar[dict[str, str]] = {"*": "no_memory"}

    def __init__(self, params: Any, roster: list[AgentSpec], seed: int, ticks: int) -> None:
        super().__init__(params, roster, seed, ticks)
        self.observers = self.agents_of("observer")
        self.redundancy = params.redundancy
        self.draws = _EvolvingDraws(params, self.agents_of("asker"), seed, ticks)

    def value_at(self, key: str, t: float) -> str:
        """The value of ``key`` from its last change at or before ``t`` (a tick drawn)."""
        draws = self.draws
        i = bisect.bisect_right(draws.times[key], t) - 1
        return draws.vals[key][max(i, 0)]

    def observe(self, t: int) -> dict[str, Observation]:
        self.draws.forget_before(t)
        facts, asked = self.draws.tick(t)
        return deal(facts, self.observers, asked, self.redundancy)

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        """Questions asked and answered right at tick ``t``, by kind: ``current`` (the
        value before tick ``t``'s changes), ``as_of`` (the value at the question's
        tick), and ``as_of_changed``, the as-of questions whose answer is not the
        current value (also counted in ``as_of``)."""
        out = dict.fromkeys(
            ("asked_current", "correct_current", "asked_as_of", "correct_as_of"), 0.0
        )
        out |= {"asked_as_of_changed": 0.0, "correct_as_of_changed": 0.0}
        for aid, q in self.draws.tick(t)[1].items():  # drawn through t: value_at can read
            current = self.value_at(q["key"], t - 1)
            truth = current if q["as_of"] is None else self.value_at(q["key"], q["as_of"])
            right = float(answers.get(aid) == truth)
            kinds = ["current"] if q["as_of"] is None else ["as_of"]
            if q["as_of"] is not None and truth != current:
                kinds.append("as_of_changed")
            for kind in kinds:
                out[f"asked_{kind}"] += 1
                out[f"correct_{kind}"] += right
        return out

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        """Current and as-of questions; the as-of-changed ones are among the as-of."""
        correct = totals.get("correct_current", 0.0) + totals.get("correct_as_of", 0.0)
        return correct, totals.get("asked_current", 0.0) + totals.get("asked_as_of", 0.0)

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        out = {"score": ratio(*self.headline(totals))}
        for kind in ("current", "as_of", "as_of_changed"):
            out[kind] = ratio(totals.get(f"correct_{kind}", 0), totals.get(f"asked_{kind}", 0))
        return out


class _EvolvingDraws(TickDraws[FactTick]):
    """evolving_facts' ticks: every key changes at tick 0, then ``changes_per_tick``
    keys a tick; from tick 2 on each asker is asked a key's value now or at an earlier
    tick. Keeps every key's history of changes drawn so far (:attr:`times`,
    :attr:`vals`), which the answers are read from."""

    def __init__(self, p: EvolvingParams, askers: list[AgentSpec], seed: int, ticks: int) -> None:
        self.p, self.askers, self.seed = p, askers, seed
        self.keys = all_keys(p.entities, p.attributes)
        super().__init__(ticks)

    def _reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        # times[key] = sorted change times; vals[key] = the value from each time on
        self.times: dict[str, list[float]] = {k.name: [] for k in self.keys}
        self.vals: dict[str, list[str]] = {k.name: [] for k in self.keys}
        self.qid = 0

    def _draw(self, t: int) -> FactTick:
        p, keys, rng = self.p, self.keys, self.rng
        changed = (
            keys
            if t == 0
            else [
                keys[int(i)]
                for i in rng.choice(len(keys), min(p.changes_per_tick, len(keys)), replace=False)
            ]
        )
        facts = []
        for k in changed:
            old = self.vals[k.name][-1] if self.vals[k.name] else None
            choices = [v for v in VALUES[: p.values] if v != old]
            value = choices[int(rng.integers(len(choices)))]
            self.times[k.name].append(float(t))
            self.vals[k.name].append(value)
            facts.append(fact(k, value, t))
        asked: dict[str, dict[str, Any]] = {}
        if t >= 2:
            for spec in self.askers:
                k = keys[int(rng.integers(len(keys)))]
                if rng.random() < p.as_of_fraction:
                    asked[spec.agent_id] = question(k, self.qid, float(rng.integers(0, t - 1)))
                else:
                    asked[spec.agent_id] = question(k, self.qid)
                self.qid += 1
        return facts, asked
