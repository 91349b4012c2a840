"""capacity_stream's set-up draws what the plain loop it replaced drew, draw for draw."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hivemem.agents.base import AgentSpec
from hivemem.scenarios.capacity_stream import CapacityStream, StreamParams, _weighted_choice
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
    assert _weighted_choice(ours, w) == int(numpys.choice(len(w), p=w / w.sum()))
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


@pytest.mark.parametrize(
    "params",
    [
        StreamParams(),
        StreamParams(keys=7, facts_per_tick=3, revise_fraction=0.6, drift_every=2, drift_shift=3),
        StreamParams(keys=200, facts_per_tick=1, zipf_a=0.8, drift_every=1, importance_noise=0.9),
    ],
)
def test_the_streams_are_those_of_the_plain_loop(params: StreamParams) -> None:
    roster = [AgentSpec(f"a{i}", "fact_memory") for i in range(4)]
    task = CapacityStream(params, roster, 11, 40)
    want = reference_streams(params, 4, 11, 40)
    for aid, rows in want.items():
        for t, (asked, facts) in enumerate(rows):
            question = task.questions[aid][t]
            assert (None if question is None else int(question["key"][1:])) == asked
            got = [(f["key"], f["value"], f["importance"]) for f in task.facts[aid][t]]
            assert got == facts
