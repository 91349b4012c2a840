"""Eviction order through a real tier, and the store's own behaviours."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hivemem.memory_bus.config import NamespaceMode, StoreConfig, TierConfig
from hivemem.memory_bus.errors import (
    CapacityError,
    ConfigError,
    InvalidInputError,
    ItemNotFoundError,
    UnknownNameError,
)
from hivemem.memory_bus.interfaces import Caller, SearchRequest, WriteRequest
from hivemem.memory_bus.item import NewItem, WriteOp
from hivemem.memory_bus.policies import make_write_policy
from hivemem.memory_bus.store import MemoryStore

ALICE = Caller("alice", frozenset({"team"}))


def store_with(**tier: object) -> MemoryStore:
    return MemoryStore(StoreConfig(dim=32, shared=TierConfig(**tier)))  # type: ignore[arg-type]


def fill(store: MemoryStore, texts: list[str]) -> list[int]:
    return [
        store.shared.write(ALICE, "team", NewItem(t), now=float(i)).item_id
        for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize(
    ("policy", "expected_victim"),
    [
        ("fifo", "a"),  # the first written goes first even though it was just read
        ("lru", "b"),  # a was read at t=3, so b is the least recently used
        ("lfu", "b"),  # a has 1 hit; b and c have none, b less recently used
    ],
)
def test_classic_eviction_order(policy: str, expected_victim: str) -> None:
    store = store_with(capacity=3, eviction=policy)
    ids = dict(zip("abc", fill(store, ["a", "b", "c"]), strict=True))
    store.shared.get(ALICE, "team", ids["a"], now=3.0)
    result = store.shared.write(ALICE, "team", NewItem("d"), now=4.0)
    assert result.evicted == [ids[expected_victim]]
    assert len(store.shared.namespaces["team"]) == 3


def _axis(i: int) -> np.ndarray:
    vec = np.zeros(32, dtype=np.float32)
    vec[i] = 1.0
    return vec


@pytest.mark.parametrize(
    ("policy", "expected_victim"),
    [
        ("fifo", "a"),  # written first (created 0), however often and lately it was read
        ("lru", "x"),  # last read at 10: the least recently read
        ("lfu", "y"),  # never read: the fewest recalls, though written at 95
        ("memorybank", "z"),  # t/S = 60/(10*2) = 3.0; x 90/50 = 1.8, y 5/10, a 1/40, w 1/20
        ("generative_agents", "w"),  # recency 1 + importance 0 + relevance 0 = 1 (others > 2)
    ],
)
def test_each_classic_policy_evicts_by_its_own_rule(policy: str, expected_victim: str) -> None:
    """One history, five different victims: each policy read by another's rule (LFU by
    recency, MemoryBank without its recalls, Generative Agents without importance or
    relevance) would evict another item. Recall times and counts go through the store
    (``get`` with ``now``), importance and vectors through the write.

    ======  =======  ===============  =====  ==========  ==========================
    item    created  reads (at)       hits   importance  vector (incoming: axis 0)
    ======  =======  ===============  =====  ==========  ==========================
    a       0        97, 98, 99       3      5           axis 0 (relevance 1)
    x       1        7, 8, 9, 10      4      9           axis 0
    z       2        40               1      9           axis 0
    w       3        99               1      0           axis 1 (relevance 0)
    y       95       (none)           0      5           axis 0
    ======  =======  ===============  =====  ==========  ==========================

    Generative Agents at now 100 (min-max per component): recency from since 1, 90, 60,
    1, 5 is a 1, x 0, z 0.29, w 1, y 0.94; importance a 0.56, x 1, z 1, w 0, y 0.56;
    relevance 1 but w's 0. Sums: a 2.56, x 2, z 2.29, w 1, y 2.5.
    """
    store = store_with(capacity=5, eviction=policy)
    rows = {"a": (0, 5, 0), "x": (1, 9, 0), "z": (2, 9, 0), "w": (3, 0, 1), "y": (95, 5, 0)}
    reads = {"a": [97, 98, 99], "x": [7, 8, 9, 10], "z": [40], "w": [99]}
    events = [(created, name) for name, (created, _, _) in rows.items()]
    events += [(t, name) for name, times in reads.items() for t in times]
    ids: dict[str, int] = {}
    for now, name in sorted(events):  # in time order: y is written after x's reads
        if name in ids:
            store.shared.get(ALICE, "team", ids[name], now=float(now))
            continue
        _, importance, axis = rows[name]
        new = NewItem(name, vector=_axis(axis), importance=importance)
        ids[name] = store.shared.write(ALICE, "team", new, now=float(now)).item_id
    result = store.shared.write(ALICE, "team", NewItem("f", vector=_axis(0)), now=100.0)
    assert result.evicted == [ids[expected_victim]]


def test_window_mode_keeps_last_k_whatever_the_policy() -> None:
    store = store_with(capacity=2, mode=NamespaceMode.WINDOW, eviction="lfu")
    ids = fill(store, ["one", "two", "three", "four"])
    assert sorted(store.shared.namespaces["team"].items) == ids[2:]


def test_token_budget_evicts_until_it_fits() -> None:
    store = store_with(mode=NamespaceMode.TOKEN_BUDGET, token_budget=5, eviction="fifo")
    ids = fill(store, ["a b", "c d", "e f g"])
    ns = store.shared.namespaces["team"]
    assert ns.tokens == 5 and sorted(ns.items) == ids[1:]
    with pytest.raises(CapacityError):
        store.shared.write(ALICE, "team", NewItem("one two three four five six"), now=9.0)


def test_an_update_that_brings_more_tokens_evicts_others_to_fit_the_budget() -> None:
    """An update used to leave a token-budget namespace over its budget for good."""
    store = store_with(mode=NamespaceMode.TOKEN_BUDGET, token_budget=6, eviction="fifo")
    events: list[tuple[str, list[int]]] = []
    store.subscribe(lambda e: events.append((e.kind, list(e.item_ids))))
    ids = fill(store, ["a b", "c d", "e f"])
    ns = store.shared.namespaces["team"]
    version = ns.items[ids[2]].version
    events.clear()
    store.shared.update(ALICE, "team", ids[2], expected_version=version, now=5.0, text="e f g h")
    assert ns.tokens == 6 and sorted(ns.items) == ids[1:]  # the oldest other went
    assert events == [("update", [ids[2]]), ("evict", [ids[0]])]
    hits = store.shared.search(ALICE, "team", ns.items[ids[2]].vector, k=5, now=None)
    assert sorted(h.item.id for h in hits) == ids[1:]  # the index let the victim go too
    with pytest.raises(CapacityError):  # can never fit: refused, nothing changed
        store.shared.update(ALICE, "team", ids[1], expected_version=1, now=6.0, text="x " * 7)
    assert ns.tokens == 6 and ns.items[ids[1]].text == "c d"


def test_a_write_policy_update_reports_what_it_evicted() -> None:
    store = store_with(
        mode=NamespaceMode.TOKEN_BUDGET, token_budget=7, eviction="fifo", write_policy="dedup"
    )
    first = store.shared.write(ALICE, "team", NewItem("car red", meta={"key": "car"}), now=0.0)
    other = store.shared.write(ALICE, "team", NewItem("sky is blue", meta={"key": "sky"}), now=1.0)
    upd = store.shared.write(
        ALICE, "team", NewItem("car is now dark green", meta={"key": "car"}), now=2.0
    )
    assert (upd.op, upd.item_id, upd.evicted) == (WriteOp.UPDATE, first.item_id, [other.item_id])
    ns = store.shared.namespaces["team"]
    assert ns.tokens == 5 and list(ns.items) == [first.item_id]


def test_dedup_policy_updates_same_key_and_skips_duplicates() -> None:
    store = store_with(write_policy="dedup")
    first = store.shared.write(
        ALICE, "team", NewItem("color of car is red", meta={"key": "car"}), now=0.0
    )
    dup = store.shared.write(
        ALICE, "team", NewItem("color of car is red", meta={"key": "car"}), now=1.0
    )
    upd = store.shared.write(
        ALICE, "team", NewItem("color of car is blue", meta={"key": "car"}), now=2.0
    )
    assert (first.op, dup.op, upd.op) == (WriteOp.ADD, WriteOp.NOOP, WriteOp.UPDATE)
    assert upd.item_id == first.item_id
    item = store.shared.get(ALICE, "team", first.item_id)
    assert item.text == "color of car is blue" and item.version == 2
    assert [r["text"] for r in store.shared.history(ALICE, "team", first.item_id)] == [
        "color of car is red",
        "color of car is blue",
    ]


def test_batch_is_all_or_nothing() -> None:
    store = store_with()
    good = WriteRequest(ALICE, "team", NewItem("fine"))
    bad = WriteRequest(ALICE, "team", NewItem("", vector=np.full(32, np.inf, dtype=np.float32)))
    with pytest.raises(InvalidInputError):
        store.shared.write_many([good, bad], now=0.0)
    assert "team" not in store.shared.namespaces


def test_search_many_mixes_namespaces_and_filters_validity() -> None:
    store = MemoryStore(StoreConfig(dim=32))
    bob = Caller("bob")
    store.private.write(ALICE, "alice", NewItem("alice likes tea"), now=0.0)
    store.private.write(bob, "bob", NewItem("bob likes coffee", valid_to=5.0), now=0.0)
    q = store.embed(["likes"])[0]
    out = store.private.search_many(
        [SearchRequest(ALICE, "alice", q, 3), SearchRequest(bob, "bob", q, 3, as_of=6.0)], now=1.0
    )
    assert [h.item.text for h in out[0]] == ["alice likes tea"]
    assert out[1] == []


def test_a_search_without_now_is_a_look_that_steers_no_eviction() -> None:
    """Under LRU, a look at ``a`` (now None) must not save it: ``b``, read with a time,
    stays the more recently used, and ``a`` is the victim."""
    store = store_with(capacity=2, eviction="lru")
    a, b = fill(store, ["apples are red", "bananas are yellow"])
    looked = store.shared.search(ALICE, "team", store.embed(["apples"])[0], 1, now=None)
    assert [h.id for h in looked] == [a] and looked[0].item.hits == 0
    store.shared.search(ALICE, "team", store.embed(["bananas"])[0], 1, now=5.0)
    assert store.shared.get(ALICE, "team", b).hits == 1
    result = store.shared.write(ALICE, "team", NewItem("cherries are dark"), now=6.0)
    assert result.evicted == [a]


def test_an_evict_event_carries_the_version_evicted() -> None:
    store = store_with(capacity=1)
    seen: list[tuple[str, int]] = []
    store.subscribe(lambda e: seen.append((e.kind, e.version)))
    [a] = fill(store, ["a"])
    store.shared.update(ALICE, "team", a, expected_version=1, now=1.0, importance=0.5)
    fill(store, ["b"])
    assert seen == [("add", 1), ("update", 2), ("add", 1), ("evict", 2)]  # it said 0


def test_unknown_names_suggest_the_right_one() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'lru'"):
        store_with(eviction="lur")
    with pytest.raises(UnknownNameError, match="did you mean 'shared'"):
        MemoryStore(StoreConfig(dim=8)).tier("shraed")


def test_events_announce_every_change() -> None:
    store = store_with(capacity=1)
    seen: list[tuple[str, int]] = []
    store.subscribe(lambda e: seen.extend((e.kind, i) for i in e.item_ids))
    a, b = fill(store, ["a", "b"])
    store.shared.update(ALICE, "team", b, expected_version=1, now=3.0, importance=1.0)
    store.shared.delete(ALICE, "team", b, now=4.0)
    assert seen == [("add", a), ("add", b), ("evict", a), ("update", b), ("delete", b)]


def test_events_are_numbered_per_namespace_and_go_on_after_a_snapshot() -> None:
    """One number per item event (a batch's one event takes one per item), counted per
    namespace; a restored store numbers on; one from before numbering starts again."""
    store = store_with(capacity=3)
    seen: list[tuple[str, str, int]] = []
    store.subscribe(lambda e: seen.extend((e.namespace, e.kind, e.seq + i) for i in range(len(e.item_ids))))  # fmt: skip
    a, b = fill(store, ["a", "b"])
    store.shared.write_many([WriteRequest(ALICE, "team", NewItem(t)) for t in "cd"], now=2.0)
    store.private.write(ALICE, "alice", NewItem("elsewhere"), now=3.0)
    store.shared.delete(ALICE, "team", b, now=4.0)
    assert seen == [("team", "add", 1), ("team", "add", 2), ("team", "add", 3), ("team", "add", 4),
                    ("team", "evict", 5), ("alice", "add", 1), ("team", "delete", 6)]  # fmt: skip
    clone = _restored(store)
    clone.subscribe(lambda e: seen.append((e.namespace, e.kind, e.seq)))
    clone.shared.delete(ALICE, "team", a + 2, now=5.0)
    assert seen[-1] == ("team", "delete", 7)
    state = msgpack.unpackb(msgpack.packb(store.get_state()), strict_map_key=False)
    del state["tiers"]["shared"]["namespaces"]["team"]["event_seq"]  # before numbering
    older = MemoryStore(store.config)
    older.set_state(state)
    assert older.shared.namespaces["team"].event_seq == 0


def test_a_batch_with_room_is_one_event_and_its_items_appear_on_first_read() -> None:
    store = MemoryStore(StoreConfig(dim=16, shared=TierConfig(capacity=10)))
    events: list[tuple[str, list[int]]] = []
    store.subscribe(lambda e: events.append((e.kind, list(e.item_ids))))
    texts = [f"fact {i} about the vault" for i in range(6)]
    results = store.shared.write_many(
        [WriteRequest(ALICE, "team", NewItem(t, meta={"n": i})) for i, t in enumerate(texts)],
        now=2.0,
    )
    ids = [r.item_id for r in results]
    assert events == [("add", ids)]  # one event for the batch
    ns = store.shared.namespaces["team"]
    assert len(ns) == 6 and ns.tokens == 6 * 5 and not ns._items  # stored, not yet built
    assert store.stats()["shared"]["items"] == 6 and not ns._items  # monitoring builds none
    got = store.shared.get(ALICE, "team", ids[4])
    assert (got.text, got.meta, got.created, got.version) == (texts[4], {"n": 4}, 2.0, 1)
    assert not ns._items  # reading one item by id builds its batch alone
    assert list(ns.items) == ids  # every item, built in write order, on the first full read
    assert ns.items[ids[4]] is got  # the item read by id, not a second copy
    # a batch that does not fit evicts item by item, and says so
    more = store.shared.write_many(
        [WriteRequest(ALICE, "team", NewItem(f"late {i}")) for i in range(5)], now=3.0
    )
    assert len(ns) == 10 and sum(len(r.evicted) for r in more) == 1
    assert [k for k, _ in events[1:]].count("evict") == 1


def test_a_search_builds_only_the_batches_of_its_hits_and_their_recalls_last() -> None:
    store = MemoryStore(StoreConfig(dim=16, shared=TierConfig()))
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5, 8, 16)).astype(np.float32)
    ids = [
        [
            r.item_id
            for r in store.shared.write_many(
                [WriteRequest(ALICE, "team", NewItem(f"b{b} r{r}", v)) for r, v in enumerate(vs)],
                now=float(b),
            )
        ]
        for b, vs in enumerate(vectors)
    ]
    ns = store.shared.namespaces["team"]
    (hit,) = store.shared.search(ALICE, "team", vectors[3][5], k=1, now=9.0)
    assert (hit.id, hit.item.text, hit.item.created) == (ids[3][5], "b3 r5", 3.0)
    assert np.array_equal(hit.item.vector, vectors[3][5]) and hit.item.hits == 1
    assert not ns._items and list(ns._pending.read) == ids[3]  # one batch of five built
    assert ns.item(ids[4][-1] + 1) is None and ns.item(-1) is None
    assert ns.item(ids[1][2]).text == "b1 r2"  # type: ignore[union-attr]
    assert (
        sorted(ns._pending.read) == ids[1] + ids[3]
        and ns.item(ids[3][0]) is ns._pending.read[ids[3][0]]
    )
    (version,) = store.shared.history(ALICE, "team", ids[0][7])  # builds batch 0 alone
    assert (version["text"], version["superseded_at"]) == ("b0 r7", None)
    assert sorted(ns._pending.read) == ids[0] + ids[1] + ids[3] and not ns._items
    everything = ns.items  # the rest are built now, the ones read by id kept as they are
    assert list(everything) == [i for batch in ids for i in batch] and not ns._pending.read
    assert everything[ids[3][5]] is hit.item and everything[ids[3][5]].accessed == 9.0
    for b, batch in enumerate(ids):
        assert [everything[i].text for i in batch] == [f"b{b} r{r}" for r in range(8)]


def _five_pending_batches(store: MemoryStore, vectors: np.ndarray) -> list[list[int]]:
    return [
        [
            r.item_id
            for r in store.shared.write_many(
                [
                    WriteRequest(ALICE, "team", NewItem(f"b{b} r{r} " * (r + 1), v))
                    for r, v in enumerate(vs)
                ],
                now=float(b),
            )
        ]
        for b, vs in enumerate(vectors)
    ]


@pytest.mark.parametrize("read_first", [False, True])
def test_a_delete_or_update_of_a_pending_item_builds_its_batch_alone(read_first: bool) -> None:
    """With ``read_first`` the namespace is built before the changes: what they must equal."""
    store = MemoryStore(StoreConfig(dim=16, shared=TierConfig()))
    vectors = np.random.default_rng(5).standard_normal((5, 8, 16)).astype(np.float32)
    ids = _five_pending_batches(store, vectors)
    ns = store.shared.namespaces["team"]
    if read_first:
        assert len(ns.items) == 40
    store.shared.delete(ALICE, "team", ids[2][3], now=6.0)
    new_vector = -vectors[2][3]
    updated = store.shared.update(
        ALICE, "team", ids[4][1], expected_version=1, now=7.0, text="moved", vector=new_vector
    )
    store.shared.update(ALICE, "team", ids[4][6], expected_version=1, now=7.5, importance=0.5)
    if not read_first:
        # batches 2 and 4 built (less the deleted item), the other three still columns
        assert not ns._items and sorted(ns._pending.read) == sorted(
            set(ids[2] + ids[4]) - {ids[2][3]}
        )
        assert ns._pending.read[ids[4][1]] is updated
    assert len(ns) == 39 and ns.item(ids[2][3]) is None and ns.item(ids[4][1]) is updated
    with pytest.raises(ItemNotFoundError):
        store.shared.delete(ALICE, "team", ids[2][3], now=8.0)
    (hit,) = store.shared.search(ALICE, "team", new_vector, k=1, now=9.0)
    assert hit.id == ids[4][1] and hit.item.text == "moved"
    (hit,) = store.shared.search(ALICE, "team", vectors[2][3], k=1, now=9.0)
    assert hit.id != ids[2][3]
    tokens, nbytes = ns.tokens, ns.nbytes
    everything = ns.items
    assert list(everything) == [i for batch in ids for i in batch if i != ids[2][3]]
    assert everything[ids[4][1]] is updated and updated.version == 2
    assert everything[ids[4][6]].importance == 0.5 and everything[ids[4][6]].version == 2
    assert ns.tokens == tokens == sum(it.tokens for it in everything.values())
    assert ns.nbytes == nbytes == sum(it.nbytes for it in everything.values())
    assert [h["superseded_by"] for h in ns.history_of(ids[2][3])] == ["delete"]
    assert [h["text"] for h in ns.history_of(ids[4][1])] == ["b4 r1 b4 r1 ", "moved"]


@pytest.mark.parametrize("lag", [0, 3])
def test_batches_whose_rows_were_all_deleted_are_let_go(lag: int) -> None:
    """A namespace kept small by deletes, written in batches and read by id alone (the
    steady state of a bus), held every batch it was ever written (300 here), deleted
    rows and all. ``lag``: rounds a batch lives before its rows are deleted (the oldest
    first). What is left must be what a namespace built at once holds, snapshot or not."""
    store = MemoryStore(StoreConfig(dim=16, shared=TierConfig(capacity=100)))
    vectors = np.random.default_rng(8).standard_normal((300, 8, 16)).astype(np.float32)
    ns, written = None, []
    for b, vs in enumerate(vectors):
        results = store.shared.write_many(
            [WriteRequest(ALICE, "team", NewItem(f"b{b} r{r} " * (r + 1), v)) for r, v in enumerate(vs)],
            now=float(b),
        )  # fmt: skip
        written.append([r.item_id for r in results])
        store.shared.search(ALICE, "team", vs[0], k=3, now=float(b))  # builds by id only
        if len(written) > lag:
            for item_id in written.pop(0):
                store.shared.delete(ALICE, "team", item_id, now=float(b))
        ns = store.shared.namespaces["team"]
        assert len(ns._pending.batches) <= 2 * (lag + 1)  # the live ones, as many emptied
    assert ns is not None and not ns._items  # every item still pending or read by id
    tokens, nbytes = ns.tokens, ns.nbytes
    live = [i for batch in written for i in batch]
    restored = MemoryStore(StoreConfig(dim=16, shared=TierConfig(capacity=100)))
    restored.set_state(msgpack.unpackb(msgpack.packb(store.get_state())))
    for held in (ns, restored.shared.namespaces["team"]):
        assert held.tokens == tokens and held.nbytes == nbytes and len(held) == len(live)
        everything = held.items
        assert list(everything) == live
        assert tokens == sum(it.tokens for it in everything.values())
        assert nbytes == sum(it.nbytes for it in everything.values())


def _two_built_then_pending(
    vectors: np.ndarray,
) -> tuple[MemoryStore, list[list[int]], list[list[int]]]:
    """A store whose namespace "team" holds the first two batches of ``vectors`` built into
    items, then the others pending; the store and the ids of both."""
    store = MemoryStore(StoreConfig(dim=16, shared=TierConfig()))
    built = _five_pending_batches(store, vectors[:2])
    assert len(store.shared.namespaces["team"].items) == 16  # both batches built
    return store, built, _five_pending_batches(store, vectors[2:])


def test_an_update_of_a_built_item_leaves_the_pending_batches_unbuilt() -> None:
    vectors = np.random.default_rng(6).standard_normal((5, 8, 16)).astype(np.float32)
    store, ids, later = _two_built_then_pending(vectors)
    ns = store.shared.namespaces["team"]
    store.shared.update(ALICE, "team", ids[0][0], expected_version=1, now=9.0, importance=0.5)
    store.shared.delete(ALICE, "team", ids[1][0], now=9.0)
    assert len(ns._pending.batches) == 3 and not ns._pending.read  # none of them built
    everything = ns.items
    assert everything[ids[0][0]].version == 2 and ids[1][0] not in everything
    assert len(everything) == 16 - 1 + 24 and all(i in everything for b in later for i in b)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_items_built_after_their_vectors_moved_into_the_approximate_index(kind: str) -> None:
    index = {"kind": "auto", "approx_threshold": 96, "build_batch": 32}
    if kind == "ivf":
        index = {**index, "kind": "ivf", "ivf_nlist": 2}
    store = store_with(index=index)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((200, 32)).astype(np.float32)
    for start in range(0, 200, 40):  # five batches, none read until the end
        store.shared.write_many(
            [
                WriteRequest(ALICE, "team", NewItem(f"v{i}", vector=vectors[i]))
                for i in range(start, start + 40)
            ],
            now=1.0,
        )
    ns = store.shared.namespaces["team"]
    assert ns.index.kind == kind and not ns._items  # merged into the index, not yet built
    built = {it.text: it.vector for it in ns.items.values()}
    assert len(built) == 200
    for i in range(200):
        np.testing.assert_array_equal(built[f"v{i}"], vectors[i])


def test_ids_are_unique_across_tiers() -> None:
    store = MemoryStore(StoreConfig(dim=16))
    p = store.private.write(ALICE, "alice", NewItem("x"), now=0.0).item_id
    s = store.shared.write(ALICE, "team", NewItem("x"), now=0.0).item_id
    assert p != s


@pytest.mark.parametrize(
    ("tier", "bad"),
    [
        ("shared", {"importance": False}),  # equal to the default 0.0, but a bool
        ("graph", {"level": 0.0}),  # equal to the default level 0, but a float
        ("shared", {"valid_to": float("nan")}),
    ],
)
def test_a_value_equal_to_a_default_but_of_another_type_is_still_refused(
    tier: str, bad: dict[str, object]
) -> None:
    """Row-form writes leave default columns out; only values of the default's own type
    count as the default, so these still reach their checks."""
    store = store_with()
    target = store.tier(tier)
    with pytest.raises(InvalidInputError):
        target.write(ALICE, "team", NewItem("x", **bad), now=0.0)  # type: ignore[arg-type]
    assert "team" not in target.namespaces


def test_a_write_policy_swapped_on_a_live_tier_gets_its_neighbours() -> None:
    # Built with a policy that needs no neighbours; dedup put in its place must see the
    # stored duplicate (a flag read once at construction kept handing it none).
    store = store_with(write_policy="never")
    store.shared.write_policy = make_write_policy("dedup")
    first = store.shared.write(ALICE, "team", NewItem("the red key"), now=0.0)
    again = store.shared.write(ALICE, "team", NewItem("the red key"), now=1.0)
    assert (first.op, again.op) == (WriteOp.ADD, WriteOp.NOOP)
    assert again.item_id == first.item_id


ODD_VALUES = [0, 0.0, -0.0, 1, 2.5, False, True, None, float("inf"), float("nan"), "x"]
ODD_ITEMS = {
    "text": ["", "a b", "x" * 5000, None, 3],
    "vector": [None, np.eye(32, dtype=np.float32)[3], np.full(32, np.nan, dtype=np.float32),
               np.ones(8, dtype=np.float32), [0.5] * 32],
    "meta": [{}, {"k": 1}, {"k": float("nan")}, [], None],
    "importance": ODD_VALUES,
    "valid_from": ODD_VALUES,
    "valid_to": ODD_VALUES,
    "level": ODD_VALUES,
}  # fmt: skip


def one_write(tier: str, item: NewItem, single: bool) -> tuple[object, ...]:
    target = MemoryStore(StoreConfig(dim=32)).tier(tier)
    try:
        if single:
            result = target.write(ALICE, "team", item, now=5.0)
        else:
            result = target.write_many([WriteRequest(ALICE, "team", item)], now=5.0)[0]
    except InvalidInputError as exc:  # a single write names its field item.<field>
        field = exc.details.get("field")
        return (type(exc), field if single else field.replace("items[0]", "item", 1))
    return (result, target.namespaces["team"].items[result.item_id].to_state())


@pytest.mark.parametrize("tier", ["shared", "graph"])
def test_a_single_write_does_what_a_one_row_write_many_does(tier: str) -> None:
    """``write`` builds its one-row batch directly (``WriteBatch.of_item``); it must
    accept, refuse and store exactly as ``write_many`` of one request does, for every
    field's odd values (one field at a time, on an otherwise plain item)."""
    cases = 0
    for name, values in ODD_ITEMS.items():
        for value in values:
            item = NewItem("a b", np.eye(32, dtype=np.float32)[1])
            setattr(item, name, value)
            assert one_write(tier, item, True) == one_write(tier, item, False), (name, value)
            cases += 1
    assert cases == 59


def test_a_single_write_refuses_what_is_not_a_new_item() -> None:
    store = store_with()
    with pytest.raises(InvalidInputError, match="expected NewItem, got dict"):
        store.shared.write(ALICE, "team", {"text": "x"}, now=0.0)  # type: ignore[arg-type]
    assert "team" not in store.shared.namespaces


def _restored(store: MemoryStore) -> MemoryStore:
    """A new store set from ``store``'s snapshot, through msgpack as a journal keeps it."""
    clone = MemoryStore(store.config)
    clone.set_state(msgpack.unpackb(msgpack.packb(store.get_state()), strict_map_key=False))
    return clone


def test_a_snapshot_keeps_rows_never_read_as_columns_and_restores_the_namespace_exactly() -> None:
    vectors = np.random.default_rng(8).standard_normal((6, 8, 16)).astype(np.float32)
    store, ids, later = _two_built_then_pending(vectors[:5])  # two built, three pending
    ids += later
    ns = store.shared.namespaces["team"]
    rows = [
        WriteRequest(ALICE, "team", NewItem(f"m{r}", v, meta={"r": r}, importance=r / 8, valid_from=0.5, valid_to=9.0 + r))
        for r, v in enumerate(vectors[5])
    ]  # fmt: skip
    ids.append([r.item_id for r in store.shared.write_many(rows, now=5.0)])  # and a fourth
    store.shared.delete(ALICE, "team", ids[3][3], now=6.0)  # builds batch 3
    store.shared.update(ALICE, "team", ids[4][1], expected_version=1, now=7.0, text="moved")
    assert len(ns._pending.batches) == 4 and sorted(ns._pending.read) == sorted(
        set(ids[3] + ids[4]) - {ids[3][3]}
    )
    clone = _restored(store)
    again = clone.shared.namespaces["team"]
    assert msgpack.packb(clone.get_state()) == msgpack.packb(store.get_state())
    # still columns where they were, read where they were read
    assert len(again._pending.batches) == 4 and len(again._items) == 16
    assert sorted(again._pending.read) == sorted(ns._pending.read)
    assert (
        (len(again), again.tokens, again.nbytes)
        == (len(ns), ns.tokens, ns.nbytes)
        == (
            47,
            sum(it.tokens for it in ns.items.values()),
            sum(it.nbytes for it in ns.items.values()),
        )
    )
    assert again.item(ids[3][3]) is None and again.item(ids[4][1]).text == "moved"  # type: ignore[union-attr]
    built = {i: it.to_state() for i, it in ns.items.items()}
    assert {i: it.to_state() for i, it in again.items.items()} == built  # same order too
    assert list(again.items) == list(built)
    assert built[ids[5][3]]["meta"] == {"r": 3} and built[ids[5][3]]["valid_to"] == 12.0


def test_a_snapshot_holds_a_vector_never_read_once() -> None:
    store = MemoryStore(StoreConfig(dim=256, shared=TierConfig()))
    vectors = np.random.default_rng(9).standard_normal((4, 64, 256)).astype(np.float32)
    _five_pending_batches(store, vectors)
    columns = len(msgpack.packb(store.get_state()))
    store.shared.namespaces["team"].items  # noqa: B018  (built: each item holds a copy)
    built = len(msgpack.packb(store.get_state()))
    assert columns > vectors.nbytes  # in the index's state
    assert built - columns > 0.95 * vectors.nbytes  # and again in every item's


def test_a_snapshot_of_version_1_still_loads() -> None:
    """Version 1 built every item and kept no columns, tokens or bytes."""
    store = MemoryStore(StoreConfig(dim=16, shared=TierConfig()))
    vectors = np.random.default_rng(10).standard_normal((3, 8, 16)).astype(np.float32)
    _five_pending_batches(store, vectors)
    items = {i: it.to_state() for i, it in store.shared.namespaces["team"].items.items()}
    state = msgpack.unpackb(msgpack.packb(store.get_state()), strict_map_key=False)
    state["version"] = 1
    for tier in state["tiers"].values():
        for ns_state in tier["namespaces"].values():
            assert ns_state.pop("pending") == []
            del ns_state["tokens"], ns_state["nbytes"]
    clone = MemoryStore(store.config)
    clone.set_state(state)
    again = clone.shared.namespaces["team"]
    assert {i: it.to_state() for i, it in again.items.items()} == items
    assert again.tokens == store.shared.namespaces["team"].tokens
    assert again.nbytes == store.shared.namespaces["team"].nbytes
    state["version"] = 3
    with pytest.raises(ConfigError, match="snapshot version 3"):
        MemoryStore(store.config).set_state(state)
