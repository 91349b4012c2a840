"""Evictions from a candidate pool kept in step are those of a matrix built per eviction."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.candidates import CandidatePool, PoolSlot, lowest_first
from hivemem.memory_bus.config import NamespaceMode, StoreConfig, TierConfig
from hivemem.memory_bus.features import candidate_features
from hivemem.memory_bus.interfaces import (
    Caller,
    EvictionContext,
    EvictionPolicy,
    WriteDecision,
    WriteRequest,
)
from hivemem.memory_bus.item import Item, NewItem, TierName, WriteOp
from hivemem.memory_bus.namespace import Namespace
from hivemem.memory_bus.policies import make_eviction_policy
from hivemem.memory_bus.policies.eviction import GenerativeAgentsPolicy
from hivemem.memory_bus.policies.learned import LearnedEvictionPolicy, Scorer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing import ContractFailure, check_eviction_policy
from hivemem.memory_bus.testing.evictions import evictions_by_definition

DIM = 8
CAPACITY = 30


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


POLICIES = ["fifo", "lru", "lfu", "memorybank", "generative_agents", "learned"]


@pytest.mark.parametrize("name", POLICIES)
def test_batched_evictions_match_a_matrix_built_for_each_one(name: str) -> None:
    def make() -> EvictionPolicy:
        if name == "learned":
            return LearnedEvictionPolicy(Scorer.init("eviction", 4, np.random.default_rng(7)))
        return make_eviction_policy(name)

    check_eviction_policy(make, capacity=CAPACITY, dim=DIM)


class ClaimsRowKeys(GenerativeAgentsPolicy):
    """generative_agents normalises over the candidates: its keys are not a row's own."""

    row_keys = True


def test_the_check_catches_a_policy_that_claims_too_much() -> None:
    with pytest.raises(ContractFailure, match="by definition"):
        check_eviction_policy(ClaimsRowKeys, capacity=CAPACITY, dim=DIM)


class SelectRaises:
    name = "select-raises"

    def select(
        self, candidates: list[Item], features: np.ndarray, n: int, ctx: object
    ) -> list[int]:
        raise KeyError("age")


class SelectAnswersAnInt:
    name = "select-int"

    def select(self, candidates: list[Item], features: np.ndarray, n: int, ctx: object) -> int:
        return 0


class FirstPosition:
    """Chooses by position, not by the candidates: the store's order is not the check's."""

    name = "first"

    def select(
        self, candidates: list[Item], features: np.ndarray, n: int, ctx: object
    ) -> list[int]:
        return [0]


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        (SelectRaises, "select raised KeyError: 'age'"),
        (SelectAnswersAnInt, r"answered 0: it must return a list of one position"),
        (FirstPosition, "must choose by the candidates' features or ids"),
    ],
)
def test_the_check_says_what_a_broken_select_did(policy: type, says: str) -> None:
    """A raising select, or one answering an int, failed the check with the policy's own
    TypeError or KeyError, and one choosing by position with a bare list of ids."""
    with pytest.raises(ContractFailure, match=says):
        check_eviction_policy(policy, capacity=CAPACITY, dim=DIM)


def test_the_check_still_catches_it_under_python_O() -> None:
    # python -O strips assert statements: a check built on them would pass anything.
    code = (
        "from hivemem.memory_bus.policies.eviction import GenerativeAgentsPolicy\n"
        "from hivemem.memory_bus.testing import ContractFailure, check_eviction_policy\n"
        "class ClaimsRowKeys(GenerativeAgentsPolicy):\n"
        "    row_keys = True\n"
        "try:\n"
        f"    check_eviction_policy(ClaimsRowKeys, capacity={CAPACITY}, dim={DIM})\n"
        "except ContractFailure as exc:\n"
        "    print('caught:', exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "caught:" in run.stdout and "by definition" in run.stdout


def test_a_window_evicts_the_oldest_write_one_at_a_time() -> None:
    config = TierConfig(capacity=5, mode=NamespaceMode.WINDOW)
    ns = Namespace(
        TierName.PRIVATE, "a", config, DIM, make_eviction_policy("lru"), np.random.default_rng(0)
    )
    rng = np.random.default_rng(2)
    items = [
        Item(i, TierName.PRIVATE, "a", "x", unit(rng), created=float(i // 3)) for i in range(12)
    ]
    evicted = ns.add_many(items, 5.0, None, lambda event: None)
    assert [v for victims in evicted for v in victims] == list(range(7))
    assert sorted(ns.items) == list(range(7, 12))


@pytest.mark.parametrize("mode", [NamespaceMode.STANDARD, NamespaceMode.WINDOW])
@pytest.mark.parametrize("name", POLICIES[:-1])
def test_a_write_of_one_row_evicts_without_a_pool_as_by_definition(
    name: str, mode: NamespaceMode
) -> None:
    policy = make_eviction_policy(name)
    ns = Namespace(
        TierName.PRIVATE,
        "a",
        TierConfig(capacity=6, mode=mode),
        DIM,
        policy,
        np.random.default_rng(0),
    )
    rng = np.random.default_rng(4)
    model: dict[int, Item] = {}
    for i in range(40):
        now = float(i // 2)  # pairs of writes share their time: ties
        if model:
            recalled = int(rng.choice(sorted(model)))
            for item in (ns.items[recalled], model[recalled]):
                item.hits, item.accessed = item.hits + 1, now
        text, importance = "w " * (i % 3 + 1), float(rng.random())
        item = Item(i, TierName.PRIVATE, "a", text, unit(rng), importance=importance, created=now)
        if mode is NamespaceMode.WINDOW:  # the definition of a window: the oldest write goes
            want = [min(model, key=lambda j: (model[j].created, j))] if len(model) == 6 else []
            model[i] = copy.deepcopy(item)
            for victim in want:
                del model[victim]
        else:
            (want,) = evictions_by_definition(
                model, [copy.deepcopy(item)], policy, now, 6, np.random.default_rng(0)
            )
        slot = PoolSlot(rows=1)
        assert ns.add_many([item], now, None, lambda event: None, slot) == [want]
        assert slot.pool is None  # no pool was built for one eviction
        assert sorted(ns.items) == sorted(model)
        assert len(ns.index) == len(model)


@pytest.mark.parametrize("seed", range(20))
def test_lowest_first_of_one_is_the_head_of_the_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    keys = [rng.integers(0, 4, n).astype(np.float64) for _ in range(int(rng.integers(1, 4)))]
    ids = rng.permutation(1000)[:n].astype(np.int64)
    if seed % 5 == 0:
        keys[0][int(rng.integers(n))] = np.nan
    items = [Item(int(i), TierName.PRIVATE, "a", "", np.zeros(DIM, np.float32)) for i in ids]
    sorted_head = int(np.lexsort((ids, *reversed(keys)))[0])
    assert lowest_first(keys, items, 1, ids) == [sorted_head]
    assert lowest_first(keys, items, 1) == [sorted_head]  # ids read off the items


class Scripted:
    """Deletes the id named by a ``del N`` text, adds anything else; reads neighbours, so
    the tier stores each ADD before deciding the next row (one ``add_many`` each)."""

    name = "scripted"
    needs_neighbours = True

    def decide(self, proposal: Item, neighbours: object, now: float) -> WriteDecision:
        if proposal.text.startswith("del "):
            return WriteDecision(WriteOp.DELETE, int(proposal.text[4:]))
        return WriteDecision(WriteOp.ADD)


def test_a_pool_kept_across_the_rows_of_a_write_forgets_what_the_write_deleted() -> None:
    store = MemoryStore(
        StoreConfig(dim=DIM, shared=TierConfig(capacity=5, eviction="fifo", write_policy="dedup")),
        embed=False,
    )  # dedup: a policy that reads neighbours, swapped for the script below
    tier = store.shared
    tier.write_policy = Scripted()
    caller = Caller("a", frozenset({"g"}))
    rng = np.random.default_rng(4)
    first = [
        tier.write(caller, "g", NewItem(f"old {i}", vector=unit(rng)), now=float(i))
        for i in range(5)
    ]
    ids = [r.item_id for r in first]
    rows = [NewItem("a", vector=unit(rng)), NewItem(f"del {ids[1]}", vector=unit(rng))]
    rows += [NewItem("b", vector=unit(rng)), NewItem("c", vector=unit(rng))]
    results = tier.write_many([WriteRequest(caller, "g", item) for item in rows], now=10.0)
    # a evicts the oldest; the second oldest is deleted; b fits; c evicts the third oldest
    # (not the deleted one, still a candidate if the pool were not told)
    assert [r.evicted for r in results] == [[ids[0]], [], [], [ids[2]]]
    assert sorted(tier.namespaces["g"].items) == sorted(
        [ids[3], ids[4]] + [r.item_id for r in results if r.op is WriteOp.ADD]
    )


@pytest.mark.parametrize("name", ["fifo", "lru", "lfu", "memorybank"])
@pytest.mark.parametrize("seed", range(5))
def test_an_ordered_pool_picks_what_lowest_first_picks_through_every_change(
    name: str, seed: int
) -> None:
    """A pool sorted once by a policy's row keys (order_by) answers lowest() as
    lowest_first over the candidates present, through removals, arrivals and updates."""
    rng = np.random.default_rng(seed)
    policy: Any = make_eviction_policy(name)
    assert policy.row_keys
    now = 50.0
    ctx = EvictionContext(now=now, rng=rng)

    def item(item_id: int) -> Item:  # few distinct values, so ties are common
        return Item(
            item_id,
            TierName.PRIVATE,
            "a",
            " ".join(["w"] * int(rng.integers(1, 4))),
            unit(rng),
            created=float(rng.integers(0, 5)),
            accessed=float(rng.integers(5, 10)),
            hits=int(rng.integers(0, 3)),
        )

    present = {i: item(i) for i in rng.permutation(200)[:40].tolist()}
    pool = CandidatePool(present.values(), now, 10.0, relevance=False)
    pool.order_by(lambda features: policy.keys(features, ctx))
    arriving = [item(1000 + i) for i in range(20)]
    pool.expect(arriving)
    for step in range(120):
        candidates = list(present.values())
        features = candidate_features(candidates, now, None, 10.0)
        ids = np.array([it.id for it in candidates], dtype=np.int64)
        want = candidates[lowest_first(policy.keys(features, ctx), candidates, 1, ids)[0]].id
        assert pool.lowest() == want, step
        roll = rng.random()
        if roll < 0.4 or not arriving:  # the lowest leaves, as an eviction
            pool.remove(want)
            del present[want]
        elif roll < 0.7:
            new = arriving.pop(0)
            pool.add(new)
            present[new.id] = new
        else:  # an update: the candidate's row is redone
            target = candidates[int(rng.integers(len(candidates)))]
            changed = copy.copy(target)
            changed.hits, changed.accessed, changed.version = target.hits + 1, now, 2
            pool.replace(changed)
            present[target.id] = changed
        if not present:
            break
