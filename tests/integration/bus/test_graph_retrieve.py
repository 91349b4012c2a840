"""Graph retrieval over the bus: what it checks, how many hits it gives, which edges it
walks without ``as_of`` (findings of an audit of the graph tier)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import GraphConfig, StoreConfig
from hivemem.memory_bus.errors import DimensionMismatchError, NonFiniteError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def alice() -> Iterator[MemoryClient]:
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, graph=GraphConfig())))
    token = server.register("alice", ["team"])
    with server, MemoryClient(server.address, "alice", token, timeout=5.0) as client:
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
