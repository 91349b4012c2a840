"""capacity_stream: a stream of facts into a small memory; eviction decides the score.

Each agent has its own stream (private tier, small capacity): facts about keys arrive
every tick, some revising a key's value (the old fact goes stale); each tick the agent is
asked about one key it has seen, drawn from a skewed (Zipf) popularity that drifts over
time. Facts carry an importance hint: the key's current popularity, with noise. Score:
accuracy (hit rate of the questions).

A question at tick t asks what the key held before tick t's facts: the truth is its
value at the end of tick t - 1 (:meth:`Stream.draw` draws the question, then the facts),
even when the same tick's observation carries a newer fact about the key (about 3
questions in 10 at the defaults). This is the agent's pipeline: it recalls during the
tick's step and its writes reach memory in the commit, so a memory agent answers from
what memory held before the tick's facts. The published results and the oracle
(:meth:`CapacityStream.next_use`) rely on this rule.

Each agent's stream is drawn a tick at a time from its own generator, as the run reaches
it, and a tick is forgotten once the run has moved past it: a run holds a few ticks of
each stream, whatever its length (drawing a long run up front held every fact of every
tick: 2.2 GB and 72 s before the first tick at 16 agents x 100,000 ticks). Belady's
oracle asks when an item is next needed; the stream of that item's agent is then drawn
ahead until the answer is known (its key asked again, or the run's end), and those ticks
wait, compactly, until the run reaches them. The draws are those of drawing everything
up front, in the same order, so the streams are the same.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
from hivemem.agents.base import AgentSpec, Observation
from hivemem.memory_bus.item import Item
from hivemem.scenarios.base import TASKS, Task, TaskParams, TickDraws, ratio
from hivemem.scenarios.facts import VALUES, Key, fact, question
from pydantic import Field


class StreamParams(TaskParams):
    keys: int = Field(48, ge=2, le=100_000)
    facts_per_tick: int = Field(2, ge=1, le=1_000, description="facts per agent per tick")
    revise_fraction: float = Field(0.3, ge=0.0, le=1.0, description="facts that revise a seen key")
    # numpy's Zipf wants zipf_a + 1 > 1, which 1e-17 + 1 is not (a stream stopped at its
    # first question); past 100 every weight but the first is below 2**-100.
    zipf_a: float = Field(1.3, ge=0.001, le=100.0, description="popularity skew")
    drift_every: int = Field(15, ge=1, description="ticks between popularity shifts")
    drift_shift: int = Field(5, ge=0, description="ranks the popularity order rotates by")
    importance_noise: float = Field(0.2, ge=0.0)


class Drawn(NamedTuple):
    """One tick of one stream: the key asked (-1: none) and its value, then the facts."""

    asked: int
    truth: str | None
    facts: list[tuple[int, str, float]]  # (key, value, importance)


class Stream(TickDraws[Drawn]):
    """One agent's stream, drawn a tick at a time (:class:`~hivemem.scenarios.base.TickDraws`).

    Also keeps, per key, the ticks of its facts and questions so far (8 bytes each), which
    the oracle reads.

    Args:
        p: The task's parameters.
        weights: Popularity weight of each rank.
        seed: The task's seed.
        index: The agent's place among the task's agents (its generator's second seed).
        ticks: Ticks in the run (nothing is drawn past them).
    """

    def __init__(
        self, p: StreamParams, weights: np.ndarray, seed: int, index: int, ticks: int
    ) -> None:
        self.p, self.weights, self.seed, self.index = p, weights, seed, index
        self.fact_times: dict[int, array[float]] = {}
        self.ask_times: dict[int, array[float]] = {}
        super().__init__(ticks)

    def _reset(self) -> None:
        self.rng = np.random.default_rng([self.seed, self.index])
        self.base = self.rng.permutation(
            self.p.keys
        )  # popularity order: base[r] is the key at rank r
        self.value: dict[int, str] = {}
        self.seen: list[int] = []
        self.seen_weights: list[float] = []
        self.cdf: np.ndarray | None = None  # of seen_weights, until they change
        self.epoch = -1
        self.order: list[int] = []
        self.rank: list[int] = []
        self.fact_times.clear()
        self.ask_times.clear()

    def draw_until_asked(self, key: int, after: float) -> None:
        """Draw until ``key`` is asked after tick ``after``, or the run ends."""
        while self.next < self.ticks:
            asks = self.ask_times.get(key)
            if asks and asks[-1] > after:
                return
            self.draw()

    def _draw(self, t: int) -> Drawn:
        """Draw tick ``t``: first the question, then the facts."""
        p, rng, n = self.p, self.rng, self.p.keys
        if t // p.drift_every != self.epoch:  # the popularity order rotates
            self.epoch = t // p.drift_every
            order_array = np.roll(self.base, -self.epoch * p.drift_shift)
            rank_array = np.empty(n, dtype=np.int64)
            rank_array[order_array] = np.arange(n)
            self.order, self.rank = order_array.tolist(), rank_array.tolist()
            seen = self.seen
            self.seen_weights = self.weights[rank_array[seen]].tolist() if seen else []
            self.cdf = None
        order, rank, seen, value = self.order, self.rank, self.seen, self.value
        asked, truth = -1, None
        if seen:  # a key seen before this tick
            if self.cdf is None:
                self.cdf = _cdf(np.array(self.seen_weights))
            asked = seen[_weighted_choice(rng, self.cdf)]
            truth = value[asked]
            _at(self.ask_times, asked, t)
        facts = []
        for _ in range(p.facts_per_tick):
            if seen and rng.random() < p.revise_fraction:
                k = seen[int(rng.integers(len(seen)))]
            else:  # a new fact, more likely about a popular key
                r = min(int(rng.zipf(p.zipf_a + 1.0)) - 1, n - 1)
                k = order[r] if rng.random() < 0.5 else int(rng.integers(n))
            old = value.get(k)
            choices = _OTHER_VALUES[old]
            value[k] = choices[int(rng.integers(len(choices)))]
            if old is None:  # a key is seen once it has a value
                seen.append(k)
                self.seen_weights.append(float(self.weights[rank[k]]))
                self.cdf = None
            pop = 1.0 - rank[k] / n
            imp = min(max(pop + float(rng.normal(0, p.importance_noise)), 0.0), 1.0)
            facts.append((k, value[k], imp))
            _at(self.fact_times, k, t)
        return Drawn(asked, truth, facts)


def _at(times: dict[int, array[float]], key: int, t: int) -> None:
    at = times.get(key)
    if at is None:
        at = times[key] = array("d")
    at.append(float(t))


@TASKS.register("capacity_stream")
class CapacityStream(Task):
    family = "capacity_stream"
    Params = StreamParams
    roles: ClassVar[dict[str, str]] = {"agent": "observes its own stream and is asked about it"}
    baseline_agent: ClassVar[dict[str, str]] = {"*": "no_memory"}
    score_name = "hit rate"
    # next_use finds an item's stream by its namespace, an agent's id: in a group's
    # namespace it found none, every item looked never needed, and the oracle evicted
    # the lowest id, as FIFO does, under the oracle's name.
    oracle_tiers: ClassVar[tuple[str, ...]] = ("private",)

    def __init__(self, params: Any, roster: list[AgentSpec], seed: int, ticks: int) -> None:
        super().__init__(params, roster, seed, ticks)
        p: StreamParams = params
        weights = 1.0 / np.arange(1, p.keys + 1) ** p.zipf_a
        self.streams: dict[str, Stream] = {
            spec.agent_id: Stream(p, weights, seed, i, ticks)
            for i, spec in enumerate(self.agents_of("agent"))
        }
        self._lock = threading.Lock()  # next_use comes from the bus's thread

    def _qid(self, index: int, t: int) -> int:
        """Questions are numbered agent by agent, tick by tick: every agent is asked at
        every tick but the first (it has seen a fact by then)."""
        return index * max(self.ticks - 1, 0) + t - 1

    def drawn(self, t: int) -> dict[str, Drawn]:
        """Tick ``t`` of every stream, as drawn."""
        with self._lock:
            return {aid: s.tick(t) for aid, s in self.streams.items()}

    def observe(self, t: int) -> dict[str, Observation]:
        obs: dict[str, Observation] = {}
        with self._lock:
            for index, (aid, stream) in enumerate(self.streams.items()):
                stream.forget_before(t)
                drawn = stream.tick(t)
                o: Observation = {"facts": [_fact(k, v, t, imp) for k, v, imp in drawn.facts]}
                if drawn.asked >= 0:
                    q = question(Key(drawn.asked, 0), self._qid(index, t))
                    q["text"], q["key"] = f"stream item k{drawn.asked} holds", f"k{drawn.asked}"
                    o["question"] = q
                obs[aid] = o
        return obs

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        asked = correct = 0
        for aid, drawn in self.drawn(t).items():
            if drawn.asked < 0:
                continue
            asked += 1
            correct += answers.get(aid) == drawn.truth
        return {"asked": asked, "correct": correct}

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        return totals.get("correct", 0.0), totals.get("asked", 0.0)

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        return {"score": ratio(*self.headline(totals))}

    def next_use(self, item: Item, now: float) -> float:
        """Next tick after ``now`` that asks for the item's key; inf if stale or never asked."""
        stream = self.streams.get(item.namespace)
        key = str(item.meta.get("key"))
        if stream is None or not key.startswith("k") or not key[1:].isdigit():
            return float("inf")
        k = int(key[1:])
        t_item = float(item.meta.get("t", item.valid_from))
        with self._lock:
            stream.draw_until_asked(k, now)
            times = stream.fact_times.get(k, ())
            asks = stream.ask_times.get(k, ())
            newer = bisect.bisect_right(times, t_item)
            if newer < len(times) and times[newer] <= now:
                return float("inf")  # a newer value was observed: this one is stale
            i = bisect.bisect_right(asks, now)
            if i >= len(asks):
                return float("inf")
            if newer < len(times) and times[newer] < asks[i]:
                return float("inf")  # it will be stale before it is asked for
            return asks[i]


def _fact(k: int, value: str, t: int, importance: float) -> dict[str, Any]:
    f = fact(Key(k, 0), value, t, importance)
    f["text"], f["key"] = f"stream item k{k} holds {value}", f"k{k}"
    return f


_OTHER_VALUES: dict[str | None, list[str]] = {
    None: list(VALUES),
    **{old: [v for v in VALUES if v != old] for old in VALUES},
}
"""The values a key may take next, by its value now (None: it has none yet)."""


def _cdf(weights: np.ndarray) -> np.ndarray:
    """The cumulative distribution ``Generator.choice`` draws from for ``p=weights / weights.sum()``."""
    cdf = (weights / weights.sum()).cumsum()
    cdf /= cdf[-1]
    return cdf


def _weighted_choice(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """``rng.choice(len(weights), p=weights / weights.sum())`` for ``cdf = _cdf(weights)``,
    the same draw without ``choice``'s checks of ``p``: the inverse of the cumulative
    distribution at one uniform draw, as ``Generator.choice`` computes it (a stream keeps
    its cdf until its weights change)."""
    return int(cdf.searchsorted(rng.random(), side="right"))
