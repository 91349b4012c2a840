"""A bus restarted on its data directory holds what it held, whatever its policies."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import GraphConfig, StoreConfig, TierConfig
from hivemem.memory_bus.interfaces import Caller, EvictionContext
from hivemem.memory_bus.item import Item, NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.policies import EVICTION_POLICIES
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing import ContractFailure, check_replay

# (private, shared, graph) eviction; every built-in policy that needs no checkpoint or oracle
POLICIES = [("lru", "memorybank", "lfu"), ("random", "generative_agents", "fifo"),
            ("memorybank", "lru", "random")]  # fmt: skip


def config(private: str, shared: str, graph: str, write: str = "dedup") -> StoreConfig:
    dedup = {"update_threshold": 0.8, "duplicate_threshold": 0.95} if write == "dedup" else {}
    return StoreConfig(
        dim=16,
        private=TierConfig(capacity=20, eviction=private),
        shared=TierConfig(capacity=40, eviction=shared, write_policy=write, write_params=dedup),
        graph=GraphConfig(capacity=40, eviction=graph),
    )


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "inline"])
@pytest.mark.parametrize("policies", POLICIES, ids=["-".join(p) for p in POLICIES])
def test_a_restarted_bus_holds_what_it_held(
    tmp_path: Path, policies: tuple[str, str, str], fork: bool
) -> None:
    live = check_replay(config(*policies), tmp_path, ops=400, seed=len(policies[0]), fork_snapshots=fork)  # fmt: skip
    # the run did what it is meant to check: every tier full and evicting, items
    # updated and deleted, edges made, snapshots loaded
    for tier in ("private", "shared", "graph"):
        namespaces = live[tier]["namespaces"].values()
        assert sum(ns["evictions"] for ns in namespaces) > 0, tier
        assert any(ns["history"] for ns in namespaces), tier
    assert live["shared"]["decisions"].get("UPDATE", 0) > 0  # the write policy read neighbours
    assert sum(map(len, live["edges"].values())) > 0
    assert (tmp_path / "snapshot.msgpack").exists()


class _Unseeded:
    """Evicts at random from Python's global generator: not the namespace's seeded one."""

    name = "unseeded"
    feature_columns: frozenset[str] = frozenset()
    uses_relevance = False

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        return random.sample(range(len(candidates)), n)


@pytest.fixture
def unseeded() -> Iterator[str]:
    EVICTION_POLICIES.register("unseeded")(_Unseeded)
    yield "unseeded"
    del EVICTION_POLICIES._factories["unseeded"]


def test_a_policy_that_decides_otherwise_on_a_replay_is_caught(
    tmp_path: Path, unseeded: str
) -> None:
    """No snapshot: the whole run is replayed, and the replay evicts other items."""
    with pytest.raises(ContractFailure, match="the restarted bus differs at /private"):
        check_replay(config(unseeded, "lru", "lru"), tmp_path, snapshot_every=100_000)


def test_agents_registered_before_start_are_journaled(tmp_path: Path) -> None:
    """Before, only a snapshot kept them: a restart that replayed the log alone refused
    again every request that needed a group (the group's writes were lost), and a
    restart from a snapshot dropped what the new process had registered."""
    secret = b"k" * 32  # the same tokens after the restart

    def bus() -> BusServer:
        return BusServer(MemoryStore(StoreConfig(dim=8)), secret=secret, journal=Journal(tmp_path, "no"))  # fmt: skip

    first = bus()
    token = first.register("alice", ["team"], role="scout")
    with first, MemoryClient(first.address, "alice", token) as alice:
        written = alice.write("shared", "team", NewItem("the team's"), now=0.0).item_id
    again = bus()
    again.register("bob", ["team"])  # the new process's own, after what it recovers
    with again, MemoryClient(again.address, "alice", token) as alice:
        assert alice.get("shared", "team", written).text == "the team's"
        agents = again.inspect(lambda _: dict(again.registry.agents))
        logged = again.inspect(lambda _: again.journal.seq)  # type: ignore[union-attr]
    assert agents["alice"] == Caller("alice", frozenset({"team"}), "scout")
    assert agents["bob"] == Caller("bob", frozenset({"team"}))
    third = bus()  # registering the same agents again journals nothing more
    third.register("alice", ["team"], role="scout")
    third.register("bob", ["team"])
    with third:
        assert third.inspect(lambda _: third.journal.seq) == logged  # type: ignore[union-attr]
