"""Eviction and write policies on hand-checked candidate sets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import ConfigError, InvalidInputError, UnknownNameError
from hivemem.memory_bus.features import COLUMN, candidate_features
from hivemem.memory_bus.interfaces import (
    Caller,
    EvictionContext,
    Hit,
    WriteDecision,
    WriteRequest,
)
from hivemem.memory_bus.item import Item, NewItem, TierName, WriteOp
from hivemem.memory_bus.policies import LRUPolicy, make_eviction_policy, make_write_policy
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing import check_eviction_policy


def item(
    i: int,
    created: float = 0.0,
    accessed: float = 0.0,
    hits: int = 0,
    importance: float = 0.0,
    vector: list[float] | None = None,
    text: str = "",
    meta: dict[str, object] | None = None,
) -> Item:
    vec = np.asarray(vector if vector is not None else [1.0, 0.0], dtype=np.float32)
    return Item(
        i, TierName.SHARED, "ns", text, vec, meta or {}, importance, created, accessed, hits
    )


def victims(
    name: str, items: list[Item], n: int = 1, now: float = 100.0, **kw: object
) -> list[int]:
    policy = make_eviction_policy(name)
    incoming = kw.get("incoming")
    ctx = EvictionContext(
        now=now,
        rng=np.random.default_rng(kw.get("seed", 0)),
        next_use=kw.get("next_use"),  # type: ignore[arg-type]
        incoming=incoming,
    )  # type: ignore[arg-type]
    context = incoming.vector if isinstance(incoming, Item) else None
    features = candidate_features(items, now, context, getattr(policy, "strength", 10.0))
    return [items[p].id for p in policy.select(items, features, n, ctx)]


def test_memorybank_often_recalled_old_memory_outlives_a_newer_one() -> None:
    # old: last recalled 40 ago, 3 recalls -> S = 10 * 4 = 40, R = exp(-40/40) = 0.37
    # new: last recalled 20 ago, 0 recalls -> S = 10,         R = exp(-20/10) = 0.14
    old = item(1, created=0, accessed=60, hits=3)
    new = item(2, created=50, accessed=80, hits=0)
    assert victims("memorybank", [old, new]) == [2]
    f = candidate_features([old, new], 100.0)
    assert math.isclose(f[0, COLUMN["retention"]], math.exp(-1.0))
    assert math.isclose(f[1, COLUMN["retention"]], math.exp(-2.0))


def test_generative_agents_weighs_recency_importance_and_relevance() -> None:
    incoming = item(9, vector=[1.0, 0.0])
    stale_unimportant = item(1, accessed=10, importance=1, vector=[0.0, 1.0])
    fresh_relevant = item(2, accessed=99, importance=1, vector=[1.0, 0.0])
    stale_important = item(3, accessed=10, importance=9, vector=[0.0, 1.0])
    order = victims(
        "generative_agents",
        [stale_unimportant, fresh_relevant, stale_important],
        n=3,
        incoming=incoming,
    )
    assert order == [1, 3, 2]


def test_lfu_breaks_ties_by_recency_then_id() -> None:
    items = [
        item(5, accessed=3, hits=1),
        item(4, accessed=3, hits=1),
        item(6, accessed=1, hits=2),
        item(7, accessed=9),
    ]
    assert victims("lfu", items, n=4) == [7, 4, 5, 6]


def test_belady_evicts_furthest_and_never_used_first() -> None:
    future = {1: 105.0, 2: math.inf, 3: 150.0}
    items = [item(1), item(2), item(3)]
    assert victims("belady", items, n=3, next_use=lambda it, now: future[it.id]) == [2, 3, 1]
    with pytest.raises(ConfigError, match="future"):
        victims("oracle", items)


def test_random_is_seeded() -> None:
    items = [item(i) for i in range(50)]
    assert victims("random", items, n=5, seed=1) == victims("random", items, n=5, seed=1)
    assert victims("random", items, n=5, seed=1) != victims("random", items, n=5, seed=2)


def test_names_params_and_plugins() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'lru'"):
        make_eviction_policy("lur")
    assert isinstance(
        make_eviction_policy("hivemem.memory_bus.policies.eviction:LRUPolicy"), LRUPolicy
    )
    with pytest.raises(ConfigError):
        make_eviction_policy("memorybank", strength=-1)
    with pytest.raises(ConfigError, match="bad parameters"):
        make_eviction_policy("lru", nonsense=1)
    with pytest.raises(InvalidInputError):
        victims("lru", [item(1)], n=2)


class MisspeltColumns(LRUPolicy):
    """A plug-in that names a feature the store does not have."""

    feature_columns = frozenset({"since_acess"})


class KeylessRows:
    """A plug-in that says its keys are per row but gives none."""

    name = "keyless"
    row_keys = True

    def select(self, candidates: object, features: object, n: int, ctx: object) -> list[int]:
        return list(range(n))


class Selectless:
    """A plug-in with no select (a misspelt method: ``choose``)."""

    name = "selectless"

    def choose(self, candidates: object, features: object, n: int, ctx: object) -> list[int]:
        return list(range(n))


def test_a_policy_naming_an_unknown_feature_or_no_keys_is_refused() -> None:
    """And one without select, as a write policy without decide is: it was made, and
    failed the first write that evicted (a store without capacity: never)."""
    with pytest.raises(ConfigError, match=f"'{__name__}:Selectless' has no select"):
        make_eviction_policy(f"{__name__}:Selectless")
    with pytest.raises(UnknownNameError, match="did you mean 'since_access'"):
        make_eviction_policy(f"{__name__}:MisspeltColumns")
    with pytest.raises(ConfigError, match="row_keys but no keys"):
        make_eviction_policy(f"{__name__}:KeylessRows")


def test_dedup_branches() -> None:
    policy = make_write_policy("dedup", duplicate_threshold=0.95, update_threshold=0.8)
    proposal = item(0, text="car is blue", meta={"key": "car"})
    same = Hit(1, 0.99, item(1, text="car is blue"))
    keyed = Hit(2, 0.5, item(2, text="the car is red", meta={"key": "car"}))
    close = Hit(3, 0.85, item(3, text="bus is blue"))
    far = Hit(4, 0.1, item(4, text="weather"))
    assert policy.decide(proposal, [same, keyed], 0.0) == WriteDecision(WriteOp.NOOP, 1)
    assert policy.decide(proposal, [close, keyed], 0.0) == WriteDecision(WriteOp.UPDATE, 2)
    assert policy.decide(item(0, text="bus is blue"), [close], 0.0) == WriteDecision(
        WriteOp.UPDATE, 3
    )
    assert policy.decide(item(0, text="x"), [far], 0.0) == WriteDecision(WriteOp.ADD)
    assert make_write_policy("never").decide(proposal, [], 0.0).op is WriteOp.NOOP
    with pytest.raises(ConfigError):
        make_write_policy("dedup", duplicate_threshold=0.5, update_threshold=0.9)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: make_eviction_policy("generative_agents", w_recency="high"), "bad parameters"),
        (lambda: make_eviction_policy("generative_agents", w_relevance=float("nan")), "finite"),
        (lambda: make_write_policy("dedup", key_field=["key"]), "key_field must be a str"),
        (
            lambda: make_write_policy("dedup", duplicate_threshold=True),  # was 1.0
            r"dedup duplicate_threshold must be a number in \[-1, 1\], got True",
        ),
        (lambda: make_write_policy("collections:OrderedDict"), "no decide"),
    ],
)
def test_parameters_no_policy_can_use_are_refused_when_it_is_made(make: Any, message: str) -> None:
    """Each was accepted: a traceback at start (ValueError), every score NaN, every
    write with a neighbour an internal error, or the first write one."""
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_token_budget_without_its_mode_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="only mode 'token_budget'"):
        TierConfig(token_budget=5)  # was ignored: the namespace never evicted by it


def test_dedup_takes_an_expired_neighbour_for_the_past_not_a_duplicate() -> None:
    """A fact asserted again after its memory expired was a NOOP: the client was told it
    was stored, and nothing was valid at the time it was asserted."""
    store = MemoryStore(StoreConfig(dim=32, shared=TierConfig(write_policy="dedup")))
    who = Caller("alice", frozenset({"team"}))
    old = store.shared.write(who, "team", NewItem("the door is red", valid_to=5.0), now=0.0)
    again = store.shared.write(who, "team", NewItem("the door is red"), now=10.0)
    assert again.op is WriteOp.ADD and again.item_id != old.item_id
    assert store.shared.write(who, "team", NewItem("the door is red"), now=11.0).op is WriteOp.NOOP


def test_belady_without_the_future_refuses_a_write_before_storing_it() -> None:
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(capacity=1, eviction="belady")))
    with pytest.raises(ConfigError, match="future"):
        store.private.write(Caller("a"), "a", NewItem("x"), now=0.0)
    assert store.stats()["private"]["items"] == 0


def test_memorybank_ranks_by_retention_after_it_underflows() -> None:
    """A, recalled 3 times, last 36,000 ago (t/S 900), against B, never recalled, 9,500
    ago (t/S 950): exp of both is 0.0, and the tie-break (the least recent) evicted A.
    B's retention is the lower: B goes."""
    a = item(1, accessed=4_000.0, hits=3)
    b = item(2, accessed=30_500.0, hits=0)
    assert victims("memorybank", [a, b], now=40_000.0) == [2]
    recent = item(3, accessed=39_990.0, hits=0)  # t/S 1: kept over both
    assert victims("memorybank", [recent, a, b], n=2, now=40_000.0) == [2, 1]


def test_generative_agents_recency_survives_a_late_now() -> None:
    """decay ** since_access is 0.0 for every candidate once each was last read some
    150,000 ago: recency then weighed nothing, and the freshest memory, the least
    important, went. By the definition (min-max over the candidates) it is the most
    recent one (1 + 0), the important old one (0 + 1) ties it, and the middling old one
    (0 + 0.5) goes."""
    fresh = item(1, accessed=240_000.0, importance=0.0)
    important = item(2, accessed=100_000.0, importance=1.0)
    middling = item(3, accessed=50_000.0, importance=0.5)
    policy = make_eviction_policy("generative_agents", w_relevance=0.0)
    pool = [fresh, important, middling]
    feats = candidate_features(pool, 400_000.0)
    ctx = EvictionContext(now=400_000.0, rng=np.random.default_rng(0))
    assert [pool[p].id for p in policy.select(pool, feats, 1, ctx)] == [3]


@pytest.mark.parametrize("parts", [2, 3])
def test_random_evicts_alike_whether_the_writes_come_in_one_batch_or_several(parts: int) -> None:
    """A run's hosts commit their agents' writes one batch per host: random eviction must
    keep the same items of a group's namespace whether its writers share one batch or not.
    It drew from the candidate pool's order, which depends on the batching."""

    def kept(split: int) -> list[str]:
        store = MemoryStore(StoreConfig(dim=32, shared=TierConfig(capacity=5, eviction="random")))
        writers = [Caller(f"a{i}", groups=frozenset({"g"})) for i in range(6)]
        for tick in range(8):
            rows = [
                WriteRequest(w, "g", NewItem(f"t{tick} w{i}", vector=_unit(tick * 6 + i)))
                for i, w in enumerate(writers)
            ]
            step = -(-len(rows) // split)
            for start in range(0, len(rows), step):
                store.shared.write_many(rows[start : start + step], now=float(tick))
        return sorted(it.text for it in store.shared.namespace_named("g").items.values())

    assert kept(parts) == kept(1)


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
    return v / np.linalg.norm(v)


class OutOfRange:
    """A plug-in whose select answers a position past its candidates."""

    name = "out-of-range"

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        return [len(candidates) + 5]


class Twice:
    """A plug-in whose select answers one position twice when asked for one."""

    name = "twice"

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        return [0, 0]


@pytest.mark.parametrize("policy", ["OutOfRange", "Twice"])
def test_a_policy_answering_out_of_its_contract_fails_the_write_naming_it(policy: str) -> None:
    """An out-of-range position failed the write with an IndexError, after the incoming
    row was in; a list of two passed unchecked. Both now name the policy and its answer."""
    name = f"{__name__}:{policy}"
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(capacity=2, eviction=name)))
    alice = Caller("alice", frozenset())
    for i in range(2):
        store.private.write(alice, "alice", NewItem(f"x{i}"), now=float(i))
    with pytest.raises(ConfigError, match=rf"eviction policy '{name}' answered \[.*\] to select\(n=1\) among 2 candidates") as info:  # fmt: skip
        store.private.write(alice, "alice", NewItem("x2"), now=2.0)
    assert info.value.details == {"policy": name}
    many = MemoryStore(StoreConfig(dim=8, private=TierConfig(capacity=2, eviction=name)))
    rows = [("alice", NewItem(f"y{i}")) for i in range(3)]  # a batch's eviction pool
    with pytest.raises(ConfigError, match=f"eviction policy '{name}'"):
        many.private.write_many([WriteRequest(alice, ns, item) for ns, item in rows], now=0.0)


class Raising:
    """A plug-in whose select raises (a bug of its own)."""

    name = "raising"

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        raise RuntimeError("boom")


class RaisingKeys:
    """A plug-in ordering rows by keys of their own, whose keys raise."""

    name = "raising-keys"
    row_keys = True

    def keys(self, features: object, ctx: object) -> list[object]:
        raise KeyError("no such column")

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        return list(range(n))


@pytest.mark.parametrize(
    ("policy", "raised"),
    [("Raising", "RuntimeError: boom"), ("RaisingKeys", "KeyError: 'no such column'")],
)
def test_a_policy_that_raises_fails_the_write_naming_it_and_its_error(
    policy: str, raised: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its own error failed the write as it was (an ``internal`` error on the bus, which
    named neither the policy nor the error); it is a ConfigError naming both now, its
    traceback logged."""
    name = f"{__name__}:{policy}"
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(capacity=2, eviction=name)))
    alice = Caller("alice", frozenset())
    store.private.write_many(
        [WriteRequest(alice, "alice", NewItem(f"x{i}")) for i in range(2)], now=0.0
    )
    with pytest.raises(ConfigError, match=f"eviction policy '{name}' raised {raised}") as info:
        store.private.write_many([WriteRequest(alice, "alice", NewItem("x2"))] * 2, now=1.0)
    assert info.value.details == {"policy": name}
    assert isinstance(info.value.__cause__, (RuntimeError, KeyError))
    assert any(r.exc_info and r.exc_info[1] is info.value.__cause__ for r in caplog.records)


class BareKeys:
    """A plug-in ordering rows by keys of their own, whose keys are one bare array (not
    a list of them)."""

    name = "bare-keys"
    row_keys = True

    def keys(self, features: Any, ctx: object) -> Any:
        return features[:, 0]

    def select(self, candidates: list[Item], features: object, n: int, ctx: object) -> list[int]:
        return list(range(n))


class ShortKeys(BareKeys):
    """Keys of one value fewer than the rows."""

    def keys(self, features: Any, ctx: object) -> Any:
        return [features[1:, 0]]


@pytest.mark.parametrize("policy", ["BareKeys", "ShortKeys"])
def test_keys_out_of_their_contract_fail_the_write_naming_the_policy(policy: str) -> None:
    """A bare array failed in numpy's lexsort (a ValueError: ``internal`` on the bus),
    naming no policy; keys of the wrong length ordered the rows wrongly, unseen."""
    name = f"{__name__}:{policy}"
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(capacity=2, eviction=name)))
    alice = Caller("alice", frozenset())
    store.private.write_many(
        [WriteRequest(alice, "alice", NewItem(f"x{i}")) for i in range(2)], now=0.0
    )
    with pytest.raises(ConfigError, match=rf"eviction policy '{name}' answered .* to keys\(\) of 2 rows: it must return a list of arrays of 2 values") as info:  # fmt: skip
        store.private.write_many([WriteRequest(alice, "alice", NewItem("x2"))] * 2, now=1.0)
    assert info.value.details == {"policy": name}


class Answerless:
    """A plug-in write policy whose decide answers nothing."""

    name = "answerless"

    def decide(self, proposal: Item, neighbours: object, now: float) -> None:
        return None


class OpByName:
    """A plug-in write policy that names its op as a str, not a WriteOp."""

    name = "op-by-name"

    def decide(self, proposal: Item, neighbours: object, now: float) -> WriteDecision:
        return WriteDecision("ADD")  # type: ignore[arg-type]


class RaisingWritePolicy:
    """A plug-in write policy whose decide raises."""

    name = "raising-write"

    def decide(self, proposal: Item, neighbours: object, now: float) -> WriteDecision:
        raise ZeroDivisionError("no neighbours")


def test_a_write_policy_that_raises_is_refused_naming_it_before_anything_is_stored() -> None:
    """Its ZeroDivisionError failed the write as it was (``internal`` on the bus)."""
    name = f"{__name__}:RaisingWritePolicy"
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(write_policy=name)))
    alice = Caller("alice", frozenset())
    with pytest.raises(ConfigError, match=f"write policy '{name}' raised ZeroDivisionError"):
        store.private.write(alice, "alice", NewItem("x"), now=0.0)
    assert "alice" not in store.private.namespaces or not len(store.private.namespaces["alice"])


class Targetless:
    """A plug-in write policy that UPDATEs without naming a target (-1)."""

    name = "targetless"

    def decide(self, proposal: Item, neighbours: object, now: float) -> WriteDecision:
        return WriteDecision(WriteOp.UPDATE)


class DeletesElsewhere:
    """A plug-in write policy whose DELETE names an id the namespace does not hold."""

    name = "deletes-elsewhere"

    def decide(self, proposal: Item, neighbours: object, now: float) -> WriteDecision:
        return WriteDecision(WriteOp.DELETE, 12345)


@pytest.mark.parametrize("policy", ["Answerless", "OpByName", "Targetless", "DeletesElsewhere"])
def test_a_write_policy_answering_out_of_its_contract_is_refused_naming_it(policy: str) -> None:
    """The first two failed the write with an AttributeError (an `internal` error on the
    bus), the last two with an ItemNotFoundError naming neither the policy nor its answer
    (`not_found`, as if the writer had named the id)."""
    name = f"{__name__}:{policy}"
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(write_policy=name)))
    alice = Caller("alice", frozenset())
    with pytest.raises(ConfigError, match=f"write policy '{name}' answered") as info:
        store.private.write(alice, "alice", NewItem("x"), now=0.0)
    assert info.value.details == {"policy": name}
    assert "alice" not in store.private.namespaces or not len(store.private.namespaces["alice"])


class ByIds:
    """A plug-in that evicts the newest candidate by the ids in ``ctx.ids``, as the docs
    offer them."""

    name = "by-ids"

    def select(self, candidates: list[Item], features: object, n: int, ctx: Any) -> list[int]:
        assert len(ctx.ids) == len(candidates)
        return [int(p) for p in np.argsort(-ctx.ids, kind="stable")[:n]]


def test_a_policy_reading_ctx_ids_gets_them_on_every_write_and_passes_the_kit() -> None:
    """A write of one row evicted with ``ctx.ids`` None (only a batch's pool gave them),
    as did the kit's definition: such a policy raised on its first eviction."""
    name = f"{__name__}:ByIds"
    store = MemoryStore(StoreConfig(dim=8, private=TierConfig(capacity=2, eviction=name)))
    alice = Caller("alice", frozenset())
    ids = [store.private.write(alice, "alice", NewItem(f"x{i}"), now=0.0).item_id for i in range(3)]
    assert sorted(store.private.namespaces["alice"].items) == [ids[0], ids[2]]
    check_eviction_policy(ByIds)
