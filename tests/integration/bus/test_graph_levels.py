"""A role limited to some graph levels, over the bus: it neither reads, changes nor ranks by
a node of another level, whatever the op (an audit found eight ways it could)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import AccessConfig, GraphConfig, StoreConfig
from hivemem.memory_bus.errors import (
    EdgeNotFoundError,
    InvalidInputError,
    ItemNotFoundError,
)
from hivemem.memory_bus.item import NewItem, WriteOp
from hivemem.memory_bus.ops import OnBehalf
from hivemem.memory_bus.protocol import ProtocolError
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 16


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    w = v + noise * vec(seed)
    return (w / np.linalg.norm(w)).astype(np.float32)


@contextmanager
def levelled_bus(graph: GraphConfig) -> Iterator[tuple[MemoryClient, MemoryClient]]:
    """``lead`` reads every level; ``wendy`` (role ``worker``) level 0 only."""
    access = AccessConfig(graph_levels={"worker": [0]})
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, graph=graph, access=access)))
    tokens = {a: server.register(a, ["team"], role=r) for a, r in [("lead", "lead"), ("wendy", "worker")]}  # fmt: skip
    with (
        server,
        MemoryClient(server.address, "lead", tokens["lead"], timeout=5.0) as lead,
        MemoryClient(server.address, "wendy", tokens["wendy"], timeout=5.0) as wendy,
    ):
        yield lead, wendy


@pytest.fixture(params=["always_add", "dedup"])
def graph_bus(request: pytest.FixtureRequest) -> Iterator[tuple[MemoryClient, MemoryClient]]:
    with levelled_bus(GraphConfig(write_policy=request.param)) as clients:
        yield clients


def test_a_hidden_node_can_be_neither_updated_nor_deleted(
    graph_bus: tuple[MemoryClient, MemoryClient],
) -> None:
    lead, wendy = graph_bus
    secret = lead.write("graph", "team", NewItem("the vault code is 4711", vector=vec(1), level=2), now=1.0)  # fmt: skip
    # to her it is no node: the error an id never given out gets (an access_denied
    # naming the level told her which ids were nodes there)
    absent = secret.item_id + 1000
    for item_id in (secret.item_id, absent):
        with pytest.raises(ItemNotFoundError, match=f"no item {item_id} in graph/team$"):
            wendy.update("graph", "team", item_id, expected_version=1, now=2.0)  # (no changes)
        with pytest.raises(ItemNotFoundError, match=f"no item {item_id} in graph/team$"):
            wendy.update("graph", "team", item_id, expected_version=1, now=2.0, text="x")
        with pytest.raises(ItemNotFoundError, match=f"no item {item_id} in graph/team$"):
            wendy.delete("graph", "team", item_id, now=3.0)
        with pytest.raises(ItemNotFoundError, match=f"no item {item_id} in graph/team$"):
            wendy.get("graph", "team", item_id)
        with pytest.raises(ItemNotFoundError, match=f"no item {item_id} in graph/team$"):
            wendy.history("graph", "team", item_id)
    gone = lead.write("graph", "team", NewItem("gone", vector=vec(2)), now=1.0).item_id
    lead.delete("graph", "team", gone, now=1.5)  # a deleted node's versions hold no level
    with pytest.raises(ItemNotFoundError, match=f"no item {gone} in graph/team$"):
        wendy.history("graph", "team", gone)
    assert next(v.get("text") for v in lead.history("graph", "team", gone)) == "gone"
    node = lead.get("graph", "team", secret.item_id)
    assert (node.text, node.version) == ("the vault code is 4711", 1)


def test_edges_and_neighbours_show_only_readable_ends(
    graph_bus: tuple[MemoryClient, MemoryClient],
) -> None:
    lead, wendy = graph_bus
    low = lead.write("graph", "team", NewItem("door open", vector=vec(1)), now=1.0).item_id
    low2 = lead.write("graph", "team", NewItem("door shut", vector=vec(2)), now=1.0).item_id
    ins = lead.write("graph", "team", NewItem("code 4711", vector=vec(3), level=2), now=1.0).item_id
    hidden = lead.add_edge("team", ins, low, "abstracts", now=2.0, meta={"why": "4711"})
    shown = lead.add_edge("team", low, low2, "follows", now=2.0)
    assert [e["id"] for e in wendy.edges("team")] == [shown]
    assert [e["id"] for e in lead.edges("team")] == [hidden, shown]
    assert wendy.edges("team", node=ins) == []
    assert wendy.neighbors("team", low) == [low2]
    assert lead.neighbors("team", low) == sorted([low2, ins])
    for edge_id in (hidden, hidden + 1000):  # a hidden edge is no edge to her
        with pytest.raises(EdgeNotFoundError, match=f"no edge {edge_id} in graph/team$"):
            wendy.invalidate_edge("team", edge_id, at=3.0)
    assert lead.edges("team", node=ins)[0]["valid_to"] == float("inf")
    wendy.invalidate_edge("team", shown, at=3.0)  # both ends hers


def test_a_restricted_search_ranks_among_what_it_may_read(
    graph_bus: tuple[MemoryClient, MemoryClient],
) -> None:
    """The top k was cut before the levels were: readable matches went missing."""
    lead, wendy = graph_bus
    q = vec(7)
    for i in range(6):  # the six best matches are insights
        lead.write("graph", "team", NewItem(f"insight {i}", vector=near(q, 10 + i, 0.1), level=2), now=1.0)  # fmt: skip
    events = [
        lead.write(
            "graph", "team", NewItem(f"event {i}", vector=near(q, 20 + i, 1.0)), now=1.0
        ).item_id
        for i in range(3)
    ]
    assert sorted(h.item.id for h in wendy.search("graph", "team", q, k=3, now=None)) == events
    for method in ("vector", "khop", "ppr"):
        hits = wendy.retrieve("team", q, k=3, now=None, method=method)
        assert sorted(h.item.id for h in hits) == events, method
    assert lead.search("graph", "team", q, k=1, now=None)[0].item.level == 2


def test_khop_walks_no_hidden_node() -> None:
    with levelled_bus(GraphConfig(seeds=1)) as (lead, wendy):
        q = vec(7)
        seed = lead.write("graph", "team", NewItem("seed", vector=q), now=1.0).item_id
        ins = lead.write("graph", "team", NewItem("insight", vector=vec(8), level=2), now=1.0).item_id  # fmt: skip
        far = lead.write("graph", "team", NewItem("far", vector=vec(9)), now=1.0).item_id
        lead.add_edge("team", seed, ins, "x", now=2.0)
        lead.add_edge("team", ins, far, "x", now=2.0)
        for method in ("khop", "ppr"):
            found = {h.item.id for h in wendy.retrieve("team", q, k=5, now=None, method=method, hops=2)}  # fmt: skip
            assert found == {seed}, method  # far is reachable only through the insight
            found = {h.item.id for h in lead.retrieve("team", q, k=5, now=None, method=method, hops=2)}  # fmt: skip
            assert found == {seed, ins, far}, method


def test_retrieve_checks_k(graph_bus: tuple[MemoryClient, MemoryClient]) -> None:
    lead, _ = graph_bus
    lead.write("graph", "team", NewItem("a", vector=vec(1)), now=1.0)
    for k in (0, -1, 5000):
        with pytest.raises(InvalidInputError, match="k"):
            lead.retrieve("team", vec(1), k=k, now=None)


def test_a_promote_refused_for_its_edge_type_writes_nothing(
    graph_bus: tuple[MemoryClient, MemoryClient],
) -> None:
    lead, _ = graph_bus
    a = lead.write("graph", "team", NewItem("a", vector=vec(1)), now=1.0).item_id
    for bad in ("", "x" * 5000):
        with pytest.raises(InvalidInputError, match="edge_type"):
            lead.promote("team", [a], NewItem("p", vector=vec(2), level=1), now=2.0, edge_type=bad)  # fmt: skip
    assert [it.id for it in lead.scan("graph", "team").items] == [a]
    with pytest.raises(ProtocolError, match=r"children\[1\]") as wrong_type:
        lead.promote("team", [a, "b"], NewItem("p", vector=vec(2), level=1), now=2.0)  # type: ignore[list-item]
    assert wrong_type.value.code == "bad_request"
    parent = lead.promote("team", [a, a], NewItem("p", vector=vec(2), level=1), now=3.0)
    assert [(e["src"], e["dst"]) for e in lead.edges("team")] == [(parent, a)]


def test_a_merging_write_policy_merges_within_a_level() -> None:
    """dedup merged a worker's event into a hidden insight, and promote's parent into its
    own child (a level-0 "parent" with a self-loop)."""
    with levelled_bus(GraphConfig(write_policy="dedup")) as (lead, wendy):
        v = vec(1)
        secret = lead.write("graph", "team", NewItem("vault code 4711", vector=v, meta={"key": "vault"}, level=2), now=1.0)  # fmt: skip
        guess = wendy.write("graph", "team", NewItem("vault code 0000", vector=v, meta={"key": "vault"}), now=2.0)  # fmt: skip
        assert (guess.op, guess.item_id != secret.item_id) == (WriteOp.ADD, True)
        assert lead.get("graph", "team", secret.item_id).text == "vault code 4711"
        child = wendy.write("graph", "team", NewItem("open the door", vector=vec(5), meta={"key": "door"}), now=3.0)  # fmt: skip
        parent = lead.promote("team", [child.item_id], NewItem("open the door", vector=vec(5), meta={"key": "door"}, level=1), now=4.0)  # fmt: skip
        assert parent != child.item_id
        assert lead.get("graph", "team", parent).level == 1
        assert lead.get("graph", "team", child.item_id).text == "open the door"


def test_an_edge_that_would_begin_after_its_node_went_never_holds(
    graph_bus: tuple[MemoryClient, MemoryClient],
) -> None:
    lead, _ = graph_bus
    a = lead.write("graph", "team", NewItem("a", vector=vec(1)), now=1.0).item_id
    b = lead.write("graph", "team", NewItem("b", vector=vec(2)), now=1.0).item_id
    edge = lead.add_edge("team", a, b, "later", now=2.0, valid_from=50.0)
    lead.delete("graph", "team", b, now=8.0)
    (state,) = [e for e in lead.edges("team") if e["id"] == edge]
    assert state["valid_to"] == state["valid_from"] == 50.0
    assert lead.edges("team", as_of=50.0) == []
    assert lead.neighbors("team", a, as_of=50.0) == []


@pytest.mark.parametrize("eviction", ["fifo", "lru", "memorybank"])
@pytest.mark.parametrize("form", ["single", "batch"])
def test_a_role_limited_to_some_levels_evicts_only_nodes_of_those_levels(
    eviction: str, form: str
) -> None:
    """Before, a worker's events evicted the team's insights (the oldest node, here) and
    its reply named their ids, which it may not even read."""
    with levelled_bus(GraphConfig(capacity=4, eviction=eviction)) as (lead, wendy):
        insight = lead.write("graph", "team", NewItem("the plan", vector=vec(0), level=2), now=0.0)  # fmt: skip
        events = [NewItem(f"event {i}", vector=vec(10 + i)) for i in range(6)]
        if form == "single":
            results = [wendy.write("graph", "team", e, now=1.0 + i) for i, e in enumerate(events)]
        else:
            results = wendy.write_many("graph", [("team", e) for e in events], now=1.0)
        mine = {r.item_id for r in results}
        evicted = {v for r in results for v in r.evicted}
        assert len(evicted) == 3 and evicted <= mine  # 7 nodes into room for 4
        assert lead.get("graph", "team", insight.item_id).text == "the plan"
        assert lead.stats()["graph"]["items"] == 4


def test_where_a_limited_role_may_evict_nothing_its_write_goes_in_over_capacity() -> None:
    with levelled_bus(GraphConfig(capacity=1)) as (lead, wendy):
        insight = lead.write("graph", "team", NewItem("the plan", vector=vec(0), level=2), now=0.0)  # fmt: skip
        event = wendy.write("graph", "team", NewItem("an event", vector=vec(1)), now=1.0)
        assert event.evicted == []
        assert lead.get("graph", "team", insight.item_id).text == "the plan"
        # a write that may evict makes room again, by the tier's policy
        lead.write("graph", "team", NewItem("the next plan", vector=vec(2), level=2), now=2.0)
        assert lead.stats()["graph"]["items"] == 1


@pytest.mark.parametrize("eviction", ["fifo", "lru"])
def test_a_mixed_batchs_rows_beyond_the_scope_are_no_candidates(eviction: str) -> None:
    """An agent host's batch of a lead's insight and a worker's events evicts only
    events: the insight, written earlier in the same batch, joined the candidates."""
    with levelled_bus(GraphConfig(capacity=3, eviction=eviction)) as (lead, wendy):
        for i in range(3):
            wendy.write("graph", "team", NewItem(f"old {i}", vector=vec(100 + i)), now=float(i))
        rows: list[tuple[object, ...]] = [
            ("team", NewItem("the insight", vector=vec(1), level=2), OnBehalf("lead", lead.token))
        ]
        rows += [("team", NewItem(f"event {i}", vector=vec(10 + i))) for i in range(4)]
        results = wendy.write_many("graph", rows, now=10.0)
        assert results[0].item_id not in {v for r in results for v in r.evicted}
        assert lead.get("graph", "team", results[0].item_id).text == "the insight"


def test_a_limited_writers_row_limits_the_evictions_of_its_own_namespace_only() -> None:
    """A host's batch of a worker's event into one namespace and a lead's insights into
    another: the lead's namespace evicts as the lead may. The worker's role limited the
    evictions of every namespace of the batch, so the lab went over its capacity where a
    sharded bus (each shard seeing its own rows' writers) evicted the old insight."""
    access = AccessConfig(graph_levels={"worker": [0]})
    config = StoreConfig(dim=DIM, graph=GraphConfig(capacity=2, eviction="fifo"), access=access)
    server = BusServer(MemoryStore(config))
    lead_token = server.register("lead", ["team", "lab"], role="lead")
    wendy_token = server.register("wendy", ["team"], role="worker")
    with server, MemoryClient(server.address, "lead", lead_token, timeout=5.0) as lead:
        old = lead.write("graph", "lab", NewItem("old insight", vector=vec(0), level=2), now=0.0)
        rows: list[tuple[object, ...]] = [
            ("team", NewItem("an event", vector=vec(1)), OnBehalf("wendy", wendy_token)),
            ("lab", NewItem("insight 1", vector=vec(2), level=2)),
            ("lab", NewItem("insight 2", vector=vec(3), level=2)),
        ]
        results = lead.write_many("graph", rows, now=1.0)
        assert [r.evicted for r in results] == [[], [], [old.item_id]]
        assert sorted(i.text for i in lead.scan("graph", "lab").items) == ["insight 1", "insight 2"]
