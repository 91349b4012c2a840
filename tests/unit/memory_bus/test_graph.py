"""The hierarchical graph tier: levels, time-valid edges, promotion, k-hop and PPR ranking."""

from __future__ import annotations

import msgpack
import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hivemem.memory_bus.config import AccessConfig, GraphConfig, StoreConfig
from hivemem.memory_bus.edges import personalized_pagerank
from hivemem.memory_bus.errors import (
    AccessDeniedError,
    CapacityError,
    InvalidInputError,
    ItemNotFoundError,
)
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore

LEAD = Caller("lead", frozenset({"team"}), role="lead")
WORKER = Caller("worker", frozenset({"team"}), role="worker")


def make_store(**graph: object) -> MemoryStore:
    access = AccessConfig(graph_levels={"worker": [0, 1]})
    return MemoryStore(StoreConfig(dim=64, graph=GraphConfig(**graph), access=access))  # type: ignore[arg-type]


def node(
    store: MemoryStore, text: str, level: int = 0, who: Caller = LEAD, now: float = 0.0
) -> int:
    return store.graph.write(who, "team", NewItem(text, level=level), now=now).item_id


def test_levels_are_checked_and_refusals_change_nothing() -> None:
    store = make_store()
    node(store, "event")
    before = msgpack.packb(store.get_state())
    with pytest.raises(InvalidInputError, match="level"):
        node(store, "too high", level=3)
    with pytest.raises(AccessDeniedError):
        node(store, "insight", level=2, who=WORKER)
    assert msgpack.packb(store.get_state()) == before


def test_as_of_sees_what_was_true_then() -> None:
    store = make_store()
    alice, paris, rome = node(store, "alice"), node(store, "paris"), node(store, "rome")
    e1 = store.graph.add_edge(LEAD, "team", alice, paris, "lives_in", now=0.0)
    store.graph.invalidate_edge(LEAD, "team", e1, at=5.0)
    store.graph.add_edge(LEAD, "team", alice, rome, "lives_in", now=5.0)
    assert store.graph.neighbors(LEAD, "team", alice, as_of=3.0) == [paris]
    assert store.graph.neighbors(LEAD, "team", alice, as_of=7.0) == [rome]
    assert [e["dst"] for e in store.graph.edges(LEAD, "team", node=alice)] == [paris, rome]
    with pytest.raises(InvalidInputError, match=r"already ends at 5\.0"):
        store.graph.invalidate_edge(LEAD, "team", e1, at=9.0)


def test_an_edge_written_with_an_end_can_be_cut_short() -> None:
    """Not refused as "already invalidated" (as it was): it ends at the earlier time."""
    store = make_store()
    alice, paris = node(store, "alice"), node(store, "paris")
    lease = store.graph.add_edge(LEAD, "team", alice, paris, "rents_in", now=0.0, valid_to=50.0)
    store.graph.invalidate_edge(LEAD, "team", lease, at=30.0)
    assert store.graph.neighbors(LEAD, "team", alice, as_of=20.0) == [paris]
    assert store.graph.neighbors(LEAD, "team", alice, as_of=40.0) == []
    with pytest.raises(InvalidInputError, match=r"already ends at 30\.0"):
        store.graph.invalidate_edge(LEAD, "team", lease, at=40.0)


def test_a_search_recalls_only_the_nodes_its_caller_may_see() -> None:
    """A worker's search may match an insight (level 2) it is not shown: that node's hits
    must stay as they were, or the live bus and a replay of its journal (which records
    what the reply held) disagree."""
    store = make_store()
    insight = node(store, "the door code is 4711", level=2)
    event = node(store, "the door code was tried", level=0)
    q = store.embed(["the door code"])[0]
    hits = store.graph.search(WORKER, "team", q, 5, now=1.0)
    assert [h.id for h in hits] == [event]
    assert store.graph.get(LEAD, "team", insight).hits == 0
    assert store.graph.get(LEAD, "team", event).hits == 1
    looked = store.graph.retrieve(LEAD, "team", q, k=5, now=None, method="ppr")
    assert {h.id for h in looked} == {insight, event}
    assert [store.graph.get(LEAD, "team", i).hits for i in (insight, event)] == [0, 1]


def test_a_deleted_nodes_history_is_for_roles_that_read_every_level() -> None:
    """A deleted node's versions keep no level: a worker (levels 0 and 1) read the texts
    of a deleted insight (level 2), which it could never read while it lived."""
    store = make_store()
    insight, event = node(store, "the code is 4711", level=2), node(store, "tried the door")
    for n in (insight, event):
        store.graph.delete(LEAD, "team", n, now=1.0)
    assert store.graph.history(LEAD, "team", insight)[0]["text"] == "the code is 4711"
    # no level kept: to a limited role a deleted node is no node, whatever its level was
    for deleted in (insight, event):
        with pytest.raises(ItemNotFoundError, match=f"no item {deleted} in graph/team$"):
            store.graph.history(WORKER, "team", deleted)


def test_promote_links_a_higher_parent() -> None:
    store = make_store()
    kids = [node(store, "tried door A: locked"), node(store, "tried door B: open")]
    task = store.graph.promote(LEAD, "team", kids, NewItem("find the open door", level=1), now=1.0)
    assert sorted(store.graph.neighbors(LEAD, "team", task, direction="out")) == sorted(kids)
    with pytest.raises(InvalidInputError, match="above"):
        store.graph.promote(LEAD, "team", [task], NewItem("bad", level=1), now=2.0)
    with pytest.raises(AccessDeniedError):
        store.graph.promote(WORKER, "team", [task], NewItem("insight", level=2), now=2.0)


def test_a_promote_whose_parent_needs_room_evicts_no_child() -> None:
    """The parent's write evicted the children it was to be linked to (before that, the
    link to an evicted child failed the request after the parent was written). A parent
    for which only its children could make room is refused before anything is written."""
    store = make_store(capacity=3, eviction="fifo")
    oldest, *kids = [node(store, f"event {i}", now=float(i)) for i in range(3)]
    with pytest.raises(CapacityError, match="only the children of this promote"):
        store.graph.promote(LEAD, "team", [oldest, *kids], NewItem("what they share", level=1), now=3.0)  # fmt: skip
    assert sorted(store.graph.namespaces["team"].items) == sorted([oldest, *kids])
    parent = store.graph.promote(LEAD, "team", kids, NewItem("what they share", level=1), now=3.0)  # fmt: skip
    assert store.graph.namespaces["team"].item(oldest) is None  # fifo: the oldest made room
    assert sorted(store.graph.neighbors(LEAD, "team", parent, direction="out")) == sorted(kids)


@pytest.mark.parametrize("read", ["khop", "neighbors"])
def test_a_read_of_a_namespace_without_edges_changes_nothing(read: str) -> None:
    """A k-hop retrieval or a neighbours read used to make an empty graph for the
    namespace, without the edge index beside it: the namespace's next eviction then
    failed (an internal error, halfway through the write)."""
    store = make_store(capacity=2, retrieval="khop")
    first = node(store, "first", now=0.0)
    if read == "khop":
        store.graph.retrieve(LEAD, "team", store.embed(["first"])[0], k=1, now=0.0)
    else:
        assert store.graph.neighbors(LEAD, "team", first) == []
    assert store.graph.graphs == {}
    node(store, "second", now=1.0)
    assert store.graph.write(LEAD, "team", NewItem("third"), now=2.0).evicted == [first]


def test_linked_node_outranks_an_unrelated_one() -> None:
    store = make_store(seeds=1)
    seed = node(store, "zebra stripes pattern")
    linked = node(store, "savanna animals habitat")
    node(store, "quarterly tax filing")
    store.graph.add_edge(LEAD, "team", seed, linked, "related", now=0.0)
    q = store.embed(["zebra stripes"])[0]
    for method in ("khop", "ppr"):
        hits = store.graph.retrieve(LEAD, "team", q, k=3, now=1.0, method=method)
        assert [h.id for h in hits[:2]] == [seed, linked], method
    # vector: its seeds, k of them (it gave GraphConfig.seeds whatever k)
    hits = store.graph.retrieve(LEAD, "team", q, k=3, now=1.0, method="vector")
    assert len(hits) == 3 and hits[0].id == seed


def test_cached_csr_pagerank_equals_networkx() -> None:
    rng = np.random.default_rng(0)
    graph = nx.gnm_random_graph(60, 200, seed=1)
    graph.add_nodes_from([60, 61])  # dangling
    nodes = sorted(graph.nodes)
    adj = nx.to_scipy_sparse_array(graph, nodelist=nodes, format="csr").astype(float)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    matrix = sp.csr_matrix(
        sp.diags(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)) @ adj
    )
    p = rng.random(len(nodes))
    p /= p.sum()
    ours = personalized_pagerank(matrix, p, 0.85)
    theirs = nx.pagerank(
        graph, alpha=0.85, personalization=dict(zip(nodes, p, strict=True)), tol=1e-12
    )
    assert np.allclose(ours, [theirs[n] for n in nodes], atol=1e-6)


def test_state_round_trip_and_node_removal_closes_edges() -> None:
    store = make_store()
    a, b, c = node(store, "a"), node(store, "b"), node(store, "c")
    store.graph.add_edge(LEAD, "team", a, b, "x", now=0.0)
    store.graph.add_edge(LEAD, "team", b, c, "y", now=0.0)
    clone = MemoryStore(store.config)
    clone.set_state(msgpack.unpackb(msgpack.packb(store.get_state()), strict_map_key=False))
    assert clone.graph.edges(LEAD, "team") == store.graph.edges(LEAD, "team")
    q = store.embed(["a"])[0]
    assert [h.id for h in clone.graph.retrieve(LEAD, "team", q, now=1.0)] == [
        h.id for h in store.graph.retrieve(LEAD, "team", q, now=1.0)
    ]
    store.graph.delete(LEAD, "team", b, now=4.0)
    assert store.graph.edges(LEAD, "team", as_of=5.0) == []
    assert len(store.graph.edges(LEAD, "team", as_of=3.0)) == 2


@pytest.mark.parametrize("seed", range(6))
def test_edges_of_a_node_and_closing_on_removal_match_a_scan_of_every_edge(seed: int) -> None:
    """Both come from the graph's adjacency; a filter over all edges is the reference.
    Self-loops, parallel edges, invalidations, deletions and evictions included."""
    rng = np.random.default_rng(seed)
    store = make_store(capacity=25, eviction="fifo")
    for step in range(120):
        now = float(step)
        roll = rng.random()
        alive = sorted(store.graph.namespaces["team"].items) if step else []
        if roll < 0.35 or len(alive) < 2:
            node(store, f"n{step}", now=now)
        elif roll < 0.8:
            src, dst = (int(x) for x in rng.choice(alive, 2))  # src == dst now and then
            store.graph.add_edge(LEAD, "team", src, dst, str(rng.choice(["x", "y"])), now=now)
        elif roll < 0.9:
            open_edges = [e for e in store.graph.edges(LEAD, "team") if e["valid_to"] == np.inf]
            if open_edges:
                edge = open_edges[int(rng.integers(len(open_edges)))]
                store.graph.invalidate_edge(LEAD, "team", edge["id"], at=now + 0.5)
        else:
            store.graph.delete(LEAD, "team", int(rng.choice(alive)), now=now)
    every = store.graph.edges(LEAD, "team")
    alive = set(store.graph.namespaces["team"].items)
    assert len(every) > 15 and any(e["valid_to"] != np.inf for e in every)
    deleted = set(store.graph.namespaces["team"].history)
    for edge in every:  # an edge of a deleted node is closed; an evicted one's are gone
        if edge["src"] not in alive or edge["dst"] not in alive:
            assert edge["valid_to"] != np.inf, edge
            assert {edge["src"], edge["dst"]} <= alive | deleted, edge
    for probe in {e["src"] for e in every} | {e["dst"] for e in every}:
        for as_of, kind in ((None, None), (60.0, None), (None, "x")):
            want = [
                e for e in store.graph.edges(LEAD, "team", as_of=as_of, type=kind)
                if probe in (e["src"], e["dst"])
            ]  # fmt: skip
            assert store.graph.edges(LEAD, "team", as_of=as_of, node=probe, type=kind) == want


def test_vector_retrieval_reads_its_hits_by_id_and_keeps_their_levels() -> None:
    store = make_store(retrieval="vector", seeds=2)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((4, 6, 64)).astype(np.float32)
    for b, batch in enumerate(vectors):  # 4 writes of 6 nodes; the last holds level 2
        store.graph.write_many(
            [
                WriteRequest(LEAD, "team", NewItem(f"b{b} n{i}", v, level=b // 3 * 2))
                for i, v in enumerate(batch)
            ],
            now=float(b),
        )
    ns = store.graph.namespaces["team"]
    (hit,) = store.graph.retrieve(LEAD, "team", vectors[1][4], k=1, now=9.0)
    assert hit.item.text == "b1 n4" and hit.item.hits == 1
    assert not ns._items and len(ns._pending.read) <= 12  # the seeds' batches, not all 24 nodes
    (top,) = store.graph.retrieve(LEAD, "team", vectors[3][0], k=1, now=9.0)
    assert (top.item.text, top.item.level) == ("b3 n0", 2)
    hidden = store.graph.retrieve(WORKER, "team", vectors[3][0], k=2, now=9.0)
    assert all(h.item.level < 2 for h in hidden)  # levels read off items built by id
    assert ns.items[hit.id] is hit.item  # the same object once every node is built


def test_edges_page_in_id_order_with_their_filters() -> None:
    store = make_store()
    nodes = [node(store, f"n{i}") for i in range(12)]
    rng = np.random.default_rng(5)
    made = []
    for t in range(300):
        src, dst = (int(x) for x in rng.choice(nodes, 2, replace=False))
        kind = ("knows", "likes")[t % 2]
        made.append(store.graph.add_edge(LEAD, "team", src, dst, kind, now=float(t)))
        if t % 7 == 0:
            store.graph.invalidate_edge(LEAD, "team", made[t // 2], at=float(t) + 0.5)
    store.graph.delete(LEAD, "team", nodes[0], now=400.0)  # its edges end with it

    def pages(limit: int, **kw: object) -> list[list[int]]:
        out, after = [], 0
        while True:
            page = store.graph.edges(LEAD, "team", after=after, limit=limit, **kw)  # type: ignore[arg-type]
            out.append([e["id"] for e in page])
            if len(page) < limit:
                return out
            after = page[-1]["id"]

    for kw in ({}, {"as_of": 150.0}, {"type": "likes"}, {"as_of": 401.0, "type": "knows"}, {"node": nodes[3]}):  # fmt: skip
        whole = [e["id"] for e in store.graph.edges(LEAD, "team", **kw)]  # type: ignore[arg-type]
        assert whole == sorted(whole) and len(whole) > 10, kw
        paged = pages(16, **kw)
        assert [i for page in paged for i in page] == whole, kw
        assert all(len(p) == 16 for p in paged[:-1])
    assert len(store.graph.edges(LEAD, "team")) == 300
    more = store.graph.add_edge(LEAD, "team", nodes[1], nodes[2], "knows", now=500.0)
    assert [e["id"] for e in store.graph.edges(LEAD, "team", after=made[-1])] == [more]
    with pytest.raises(InvalidInputError, match="limit"):
        store.graph.edges(LEAD, "team", limit=0)
    with pytest.raises(InvalidInputError, match="after"):
        store.graph.edges(LEAD, "team", after=-1)
    empty = make_store().graph
    assert empty.edges(LEAD, "team", after=5, limit=3) == []
    assert empty._edge_ids == {} and empty.edge_index == {}  # a read makes nothing


def test_khop_ranks_a_seeds_neighbours_below_it_whatever_the_scores_sign() -> None:
    """Scores are cosines: a seed may score below 0, and halving that per hop ranked its
    neighbours above the seed itself."""
    store = make_store(retrieval="khop", seeds=1)
    q, seed_v, near_v = np.zeros((3, 64), dtype=np.float32)
    q[0] = 1.0
    seed_v[[0, 1]] = -0.2, np.sqrt(1 - 0.04)  # the best match: cosine -0.2
    near_v[[0, 2]] = -0.9, np.sqrt(1 - 0.81)  # cosine -0.9
    seed = store.graph.write(LEAD, "team", NewItem("seed", vector=seed_v), now=0.0).item_id
    near = store.graph.write(LEAD, "team", NewItem("near", vector=near_v), now=0.0).item_id
    store.graph.add_edge(LEAD, "team", seed, near, "x", now=0.0)
    hits = store.graph.retrieve(LEAD, "team", q, k=2, now=None, hops=1)
    assert [h.id for h in hits] == [seed, near]
    assert hits[1].score == pytest.approx(-0.4)  # one hop from -0.2: -0.1 ranked it first


@pytest.mark.parametrize("method", ["khop", "ppr"])
def test_a_walk_as_of_a_time_passes_no_node_expired_then(method: str) -> None:
    """An expired node was left out of the hits, but walks went through it to the nodes
    only it linked."""
    store = make_store(retrieval=method, seeds=1)
    q = np.zeros(64, dtype=np.float32)
    q[0] = 1.0
    seed = store.graph.write(LEAD, "team", NewItem("seed", vector=q), now=0.0).item_id
    mid = store.graph.write(LEAD, "team", NewItem("mid", valid_to=5.0), now=0.0).item_id
    far = node(store, "far")
    store.graph.add_edge(LEAD, "team", seed, mid, "x", now=0.0)
    store.graph.add_edge(LEAD, "team", mid, far, "x", now=0.0)

    def found(as_of: float) -> set[int]:
        hits = store.graph.retrieve(LEAD, "team", q, k=5, now=None, hops=2, as_of=as_of)
        return {h.id for h in hits}

    assert found(3.0) == {seed, mid, far}
    assert found(10.0) == {seed}
