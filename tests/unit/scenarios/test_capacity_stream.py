"""capacity_stream draws what the plain loop it replaced drew, draw for draw, a tick at a
time as the run reaches it, and its oracle answers as if every tick had been drawn first."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hivemem.agents.base import AgentSpec
from hivemem.memory_bus.item import Item
from hivemem.scenarios.capacity_stream import (
    CapacityStream,
    StreamParams,
    _cdf,
    _weighted_choice,
)
from hivemem.scenarios.facts import VALUES
from hypothesis import given
from hypothesis import strategies as st


@given(
    seed=st.integers(0, 2**32 - 1),
    weights=st.lists(st.floats(1e-6, 1e3), min_size=1, max_size=60),
)
def test_a_weighted_choice_is_generator_choice_draw_for_draw(
    seed: int, weights: list[float]
) -> None:
    w = np.array(weights)
    ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
    assert _weighted_choice(ours, _cdf(w)) == int(numpys.choice(len(w), p=w / w.sum()))
    assert ours.random() == numpys.random()  # the streams stay in step


def reference_streams(p: StreamParams, agents: int, seed: int, ticks: int) -> dict[str, Any]:
    """The task's streams as the plain loop drew them (before 2026-12-06): the popularity
    order rolled and ranked every tick, ``rng.choice`` for the question, ``np.clip``."""
    n = p.keys
    weights = 1.0 / np.arange(1, n + 1) ** p.zipf_a
    out: dict[str, Any] = {}
    for a in range(agents):
        rng = np.random.default_rng([seed, a])
        base = rng.permutation(n)
        value: dict[int, str] = {}
        seen: list[int] = []
        rows = []
        for t in range(ticks):
            order = np.roll(base, -(t // p.drift_every) * p.drift_shift)
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            asked = None
            if seen:
                w = weights[rank[seen]]
                asked = seen[int(rng.choice(len(seen), p=w / w.sum()))]
            facts = []
            for _ in range(p.facts_per_tick):
                if seen and rng.random() < p.revise_fraction:
                    k = seen[int(rng.integers(len(seen)))]
                else:
                    r = min(int(rng.zipf(p.zipf_a + 1.0)) - 1, n - 1)
                    k = int(order[r]) if rng.random() < 0.5 else int(rng.integers(n))
                old = value.get(k)
                choices = [v for v in VALUES if v != old]
                value[k] = choices[int(rng.integers(len(choices)))]
                if k not in seen:
                    seen.append(k)
                pop = 1.0 - rank[k] / n
                imp = float(np.clip(pop + rng.normal(0, p.importance_noise), 0, 1))
                facts.append((f"k{k}", value[k], imp))
            rows.append((asked, facts))
        out[f"a{a}"] = rows
    return out


PARAMS = [
    StreamParams(),
    StreamParams(keys=7, facts_per_tick=3, revise_fraction=0.6, drift_every=2, drift_shift=3),
    StreamParams(keys=200, facts_per_tick=1, zipf_a=0.8, drift_every=1, importance_noise=0.9),
]


def asked_and_facts(obs: dict[str, Any]) -> tuple[int | None, list[tuple[str, str, float]]]:
    question = obs.get("question")
    facts = [(f["key"], f["value"], f["importance"]) for f in obs["facts"]]
    return (None if question is None else int(question["key"][1:])), facts


@pytest.mark.parametrize("params", PARAMS)
def test_the_streams_are_those_of_the_plain_loop(params: StreamParams) -> None:
    roster = [AgentSpec(f"a{i}", "fact_memory") for i in range(4)]
    task = CapacityStream(params, roster, 11, 40)
    want = reference_streams(params, 4, 11, 40)
    qids = []
    for t in range(40):
        obs = task.observe(t)
        for aid, rows in want.items():
            assert asked_and_facts(obs[aid]) == rows[t]
            if "question" in obs[aid]:
                qids.append(obs[aid]["question"]["qid"])
    assert sorted(qids) == list(range(4 * 39))  # one per agent and tick but the first


def reference_next_use(rows: list[Any], key: str, t_item: float, now: float) -> float:
    """The oracle's answer from a fully drawn stream, by scanning it."""
    newer = [
        t for t, (_, facts) in enumerate(rows) if t > t_item and any(f[0] == key for f in facts)
    ]
    asks = [t for t, (asked, _) in enumerate(rows) if t > now and f"k{asked}" == key]
    if newer and newer[0] <= now:
        return math.inf  # a newer value was observed: this one is stale
    if not asks or (newer and newer[0] < asks[0]):
        return math.inf  # never asked again, or stale first
    return float(asks[0])


@pytest.mark.parametrize("params", PARAMS)
def test_the_oracle_sees_ahead_and_the_run_still_gets_the_same_ticks(params: StreamParams) -> None:
    roster = [AgentSpec(f"a{i}", "fact_memory") for i in range(3)]
    task = CapacityStream(params, roster, 5, 60)
    want = reference_streams(params, 3, 5, 60)
    rng = np.random.default_rng(0)
    seen: list[tuple[str, str, float]] = []
    finite = 0
    for t in range(60):
        obs = task.observe(t)
        for aid, o in obs.items():
            assert asked_and_facts(o) == want[aid][t]  # after drawing ahead for the oracle too
            seen += [(aid, f["key"], f["t"]) for f in o["facts"]]
        for i in rng.choice(len(seen), size=min(len(seen), 8), replace=False):
            aid, key, t_item = seen[i]
            item = Item(
                1, "private", aid, "x", np.zeros(1, np.float32), meta={"key": key, "t": t_item}
            )
            got = task.next_use(item, float(t))
            assert got == reference_next_use(want[aid], key, t_item, float(t))
            finite += got != math.inf
    assert finite > 20  # the answers were not all "never"


def test_a_run_holds_only_the_ticks_ahead_of_it() -> None:
    roster = [AgentSpec(f"a{i}", "fact_memory") for i in range(2)]
    task = CapacityStream(StreamParams(), roster, 3, 100_000)
    for t in range(500):
        task.observe(t)
        task.score(t, {})
    assert all(len(s.drawn) == 1 for s in task.streams.values())  # only tick 499, for score
    # a tick already forgotten is drawn again from the start, the same
    again = task.observe(7)
    fresh = CapacityStream(StreamParams(), roster, 3, 100_000)
    for t in range(7):
        fresh.observe(t)
    assert again == fresh.observe(7)
