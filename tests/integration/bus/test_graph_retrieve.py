"""Graph retrieval over the bus: what it checks, how many hits it gives, which edges it
walks without ``as_of`` (findings of an audit of the graph tier)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import GraphConfig
from hivemem.memory_bus.errors import DimensionMismatchError, NonFiniteError
from hivemem.memory_bus.item import NewItem

from .conftest import graph_client, unit_vector

DIM = 8


def unit(seed: int) -> np.ndarray:
    return unit_vector(seed, DIM)


@pytest.fixture
def alice() -> Iterator[MemoryClient]:
    with graph_client(GraphConfig(), DIM) as client:
        yield client


def test_the_query_vector_is_checked_on_an_empty_namespace(alice: MemoryClient) -> None:
    """It answered [] to a 3-d or NaN vector where no node was yet (search refused)."""
    for method in ("vector", "khop", "ppr"):
        with pytest.raises(DimensionMismatchError, match="expected dimension 8, got 3"):
            alice.retrieve("team", np.ones(3, np.float32), 5, now=None, method=method)
        with pytest.raises(NonFiniteError):
            alice.retrieve("team", np.full(DIM, np.nan, np.float32), 5, now=None, method=method)
    assert alice.retrieve("team", unit(1), 5, now=None) == []  # a good vector: nothing yet


def test_vector_retrieval_gives_k_hits_and_the_walks_rank_from_the_seeds(
    alice: MemoryClient,
) -> None:
    """``vector`` answered at most ``GraphConfig.seeds`` (5) hits whatever k; it seeds
    max(k, seeds) now. khop and ppr rank what they reach from the 5 seeds: with no edge,
    the seeds alone."""
    for i in range(20):
        alice.write("graph", "team", NewItem(f"n{i}", vector=unit(i)), now=0.0)
    q = unit(99)
    best = [h.item.id for h in alice.search("graph", "team", q, 8, now=None)]
    hits = alice.retrieve("team", q, 8, now=None, method="vector")
    assert [h.item.id for h in hits] == best
    assert len(alice.retrieve("team", q, 3, now=None, method="vector")) == 3
    for method in ("khop", "ppr"):
        hits = alice.retrieve("team", q, 8, now=None, method=method)
        assert sorted(h.item.id for h in hits) == sorted(best[:5]), method


def test_without_as_of_the_graph_reads_walk_open_edges_and_as_of_now_the_valid_ones() -> None:
    """Pins what docs/protocol.md says of a missing ``as_of``: the open edges (never
    ended), whatever their ``valid_from``; ``as_of=now`` for the edges valid now. At
    now=5, a lease valid 0..100 is valid but not open; a move beginning at 50 is open but
    not valid yet."""
    with graph_client(GraphConfig(seeds=1), DIM) as alice:
        walked_at_5(alice)


def walked_at_5(alice: MemoryClient) -> None:
    e = np.eye(DIM, dtype=np.float32)
    a = alice.write("graph", "team", NewItem("alice", vector=e[0]), now=0.0).item_id
    paris = alice.write("graph", "team", NewItem("paris", vector=e[1]), now=0.0).item_id
    tokyo = alice.write("graph", "team", NewItem("tokyo", vector=e[2]), now=0.0).item_id
    lease = alice.add_edge("team", a, paris, "rents_in", now=0.0, valid_to=100.0)
    move = alice.add_edge("team", a, tokyo, "moves_to", now=0.0, valid_from=50.0)
    walk = {"now": None, "k": 5, "hops": 1}
    assert alice.neighbors("team", a) == [tokyo]
    assert alice.neighbors("team", a, as_of=5.0) == [paris]
    for method in ("khop", "ppr"):
        open_walk = alice.retrieve("team", e[0], method=method, **walk)
        assert {h.item.id for h in open_walk} == {a, tokyo}, method
        valid_walk = alice.retrieve("team", e[0], method=method, as_of=5.0, **walk)
        assert {h.item.id for h in valid_walk} == {a, paris}, method
    # edges without as_of: every edge kept, ended or not; with it, those valid then
    assert [x["id"] for x in alice.edges("team")] == [lease, move]
    assert [x["id"] for x in alice.edges("team", as_of=5.0)] == [lease]
    assert alice.stats()["graph"]["open_edges"] == 1  # the move: valid_to infinite
