"""A batch's proposals searched together decide exactly as when searched row by row."""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import pytest
from hivemem.memory_bus import proposals
from hivemem.memory_bus.candidates import PoolSlot
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.features import WRITE_COLUMN, WRITE_FEATURE_NAMES
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.policies.learned import LearnedWritePolicy, Scorer
from hivemem.memory_bus.store import MemoryStore

DIM = 16
CALLER = Caller("a", frozenset({"g"}))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def mixed_scorer() -> Scorer:
    """A linear write scorer that ADDs the unfamiliar, UPDATEs or DELETEs a keyed match
    and NOOPs a repeated text (random weights here decided NOOP throughout)."""
    w = np.zeros((len(WRITE_FEATURE_NAMES), 4))  # columns: ADD, UPDATE, DELETE, NOOP
    col = WRITE_COLUMN
    w[col["bias"]] = [3.0, 0.0, 0.0, 0.0]
    w[col["best_score"]] = [-4.0, 0.0, 1.0, 2.0]
    w[col["same_key"]] = [0.0, 3.0, 0.0, 0.0]
    w[col["best_is_same_key"]] = [0.0, 0.0, 2.5, 0.0]
    w[col["same_text"]] = [0.0, 0.0, 0.0, 4.0]
    return Scorer("write", 0, np.concatenate([w.ravel(), np.zeros(4)]))


def run(
    policy: str, capacity: int | None
) -> tuple[list[list[tuple[str, int, tuple[int, ...]]]], list[int], Counter[str]]:
    """Twenty-five batches of re-proposed facts (exact, noisy, keyed) and new ones."""
    config = TierConfig(capacity=capacity, eviction="lru", write_policy="dedup")
    store = MemoryStore(StoreConfig(dim=DIM, shared=config), embed=False)
    if policy == "learned":
        store.shared.write_policy = LearnedWritePolicy(mixed_scorer())
    rng = np.random.default_rng(3)
    facts = unit(rng.standard_normal((40, DIM)))
    out, ops = [], Counter()
    for step in range(25):
        requests = []
        for _ in range(int(rng.integers(2, 30))):
            fact, kind = int(rng.integers(40)), float(rng.random())
            if kind < 0.3:
                vector, text = facts[fact], f"fact {fact}"
            elif kind < 0.6:
                vector, text = unit(facts[fact] + 0.15 * rng.standard_normal(DIM)), f"fact {fact}!"
            else:
                vector, text = unit(rng.standard_normal(DIM)), f"new {step}"
            meta = {"key": f"k{fact}"} if kind < 0.45 else {}
            requests.append(WriteRequest(CALLER, "g", NewItem(text, vector=vector, meta=meta)))
        results = store.shared.write_many(requests, now=float(step))
        out.append([(r.op.value, r.item_id, tuple(r.evicted)) for r in results])
        ops.update(r.op.value for r in results)
    return out, sorted(store.shared.namespaces["g"].items), ops


@pytest.mark.parametrize("policy", ["dedup", "learned"])
@pytest.mark.parametrize("capacity", [None, 60])
def test_searched_together_decides_as_row_by_row(
    monkeypatch: pytest.MonkeyPatch, policy: str, capacity: int | None
) -> None:
    monkeypatch.setattr(proposals, "BATCH_SEARCH_FROM", 10**9)  # every row searched alone
    alone = run(policy, capacity)
    monkeypatch.setattr(proposals, "BATCH_SEARCH_FROM", 0)  # every batch searched together
    together = run(policy, capacity)
    assert together == alone
    monkeypatch.setattr(
        proposals, "PoolSlot", partial(PoolSlot, keep=False)
    )  # candidates built per row's ADD
    assert run(policy, capacity) == alone
    ops = alone[2]
    assert len(ops) >= 3, ops  # the workload makes more than ADDs (else it proves little)
