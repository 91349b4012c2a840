"""capacity_stream: a stream of facts into a small memory; eviction decides the score.

Each agent has its own stream (private tier, small capacity): facts about keys arrive
every tick, some revising a key's value (the old fact goes stale); each tick the agent is
asked about one key it has seen, drawn from a skewed (Zipf) popularity that drifts over
time. Facts carry an importance hint: the key's current popularity, with noise. The
task draws every query up front, so it can tell Belady's oracle when each item is next
needed. Score: accuracy (hit rate of the questions).
"""

from __future__ import annotations

import bisect
from typing import Any, ClassVar

import numpy as np
from hivemem.agents.base import AgentSpec, Observation
from hivemem.memory_bus.item import Item
from hivemem.scenarios.base import TASKS, Task, TaskParams, ratio
from hivemem.scenarios.facts import VALUES, Key, fact, question
from pydantic import Field


class StreamParams(TaskParams):
    keys: int = Field(48, ge=2, le=100_000)
    facts_per_tick: int = Field(2, ge=1)
    revise_fraction: float = Field(0.3, ge=0.0, le=1.0, description="facts that revise a seen key")
    zipf_a: float = Field(1.3, gt=0.0)
    drift_every: int = Field(15, ge=1, description="ticks between popularity shifts")
    drift_shift: int = Field(5, ge=0, description="ranks the popularity order rotates by")
    importance_noise: float = Field(0.2, ge=0.0)


@TASKS.register("capacity_stream")
class CapacityStream(Task):
    family = "capacity_stream"
    Params = StreamParams
    roles: ClassVar[dict[str, str]] = {"agent": "observes its own stream and is asked about it"}
    baseline_agent: ClassVar[dict[str, str]] = {"*": "no_memory"}
    score_name = "hit rate"

    def __init__(self, params: Any, roster: list[AgentSpec], seed: int, ticks: int) -> None:
        super().__init__(params, roster, seed, ticks)
        p: StreamParams = params
        n = p.keys
        weights = 1.0 / np.arange(1, n + 1) ** p.zipf_a
        self.facts: dict[str, list[list[dict[str, Any]]]] = {}
        self.questions: dict[str, list[dict[str, Any] | None]] = {}
        self.truth: dict[str, list[str | None]] = {}
        # per (agent, key): fact times (to tell stale items) and question times (next use)
        self.fact_times: dict[tuple[str, str], list[float]] = {}
        self.ask_times: dict[tuple[str, str], list[float]] = {}
        qid = 0
        for spec in self.agents_of("agent"):
            aid = spec.agent_id
            rng = np.random.default_rng([seed, len(self.facts)])
            base = rng.permutation(n)  # popularity order: base[r] is the key at rank r
            value: dict[int, str] = {}
            seen: list[int] = []
            facts: list[list[dict[str, Any]]] = []
            qs: list[dict[str, Any] | None] = []
            truth: list[str | None] = []
            epoch = -1
            for t in range(ticks):
                if t // p.drift_every != epoch:  # the popularity order rotates
                    epoch = t // p.drift_every
                    order_array = np.roll(base, -epoch * p.drift_shift)
                    rank_array = np.empty(n, dtype=np.int64)
                    rank_array[order_array] = np.arange(n)
                    order, rank = order_array.tolist(), rank_array.tolist()
                    seen_weights = weights[rank_array[seen]].tolist() if seen else []
                # the question comes first: about a key seen before this tick
                if seen:
                    k = seen[_weighted_choice(rng, np.array(seen_weights))]
                    q = question(Key(k, 0), qid)
                    q["text"], q["key"] = f"stream item k{k} holds", f"k{k}"
                    qid += 1
                    qs.append(q)
                    truth.append(value[k])
                    self.ask_times.setdefault((aid, f"k{k}"), []).append(float(t))
                else:
                    qs.append(None)
                    truth.append(None)
                batch = []
                for _ in range(p.facts_per_tick):
                    if seen and rng.random() < p.revise_fraction:
                        k = seen[int(rng.integers(len(seen)))]
                    else:  # a new fact, more likely about a popular key
                        r = min(int(rng.zipf(p.zipf_a + 1.0)) - 1, n - 1)
                        k = order[r] if rng.random() < 0.5 else int(rng.integers(n))
                    old = value.get(k)
                    choices = [v for v in VALUES if v != old]
                    value[k] = choices[int(rng.integers(len(choices)))]
                    if old is None:  # a key is seen once it has a value
                        seen.append(k)
                        seen_weights.append(float(weights[rank[k]]))
                    pop = 1.0 - rank[k] / n
                    imp = min(max(pop + float(rng.normal(0, p.importance_noise)), 0.0), 1.0)
                    f = fact(Key(k, 0), value[k], t, imp)
                    f["text"], f["key"] = f"stream item k{k} holds {value[k]}", f"k{k}"
                    batch.append(f)
                    self.fact_times.setdefault((aid, f"k{k}"), []).append(float(t))
                facts.append(batch)
            self.facts[aid], self.questions[aid], self.truth[aid] = facts, qs, truth

    def observe(self, t: int) -> dict[str, Observation]:
        obs: dict[str, Observation] = {}
        for aid, facts in self.facts.items():
            o: Observation = {"facts": facts[t]}
            q = self.questions[aid][t]
            if q is not None:
                o["question"] = q
            obs[aid] = o
        return obs

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        asked = correct = 0
        for aid, qs in self.questions.items():
            if qs[t] is None:
                continue
            asked += 1
            correct += answers.get(aid) == self.truth[aid][t]
        return {"asked": asked, "correct": correct}

    def summary(self, totals: dict[str, float]) -> dict[str, float]:
        return {"score": ratio(totals.get("correct", 0), totals.get("asked", 0))}

    def next_use(self, item: Item, now: float) -> float:
        """Next tick after ``now`` that asks for the item's key; inf if stale or never asked."""
        key = (item.namespace, str(item.meta.get("key")))
        t_item = float(item.meta.get("t", item.valid_from))
        times = self.fact_times.get(key, [])
        newer = bisect.bisect_right(times, t_item)
        if newer < len(times) and times[newer] <= now:
            return float("inf")  # a newer value was observed: this one is stale
        asks = self.ask_times.get(key, [])
        i = bisect.bisect_right(asks, now)
        if i >= len(asks):
            return float("inf")
        if newer < len(times) and times[newer] < asks[i]:
            return float("inf")  # it will be stale before it is asked for
        return asks[i]


def _weighted_choice(rng: np.random.Generator, weights: np.ndarray) -> int:
    """``rng.choice(len(weights), p=weights / weights.sum())``, the same draw without
    ``choice``'s checks of ``p`` (a quarter of this task's set-up): the inverse of the
    cumulative distribution at one uniform draw, as ``Generator.choice`` computes it."""
    cdf = (weights / weights.sum()).cumsum()
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))
