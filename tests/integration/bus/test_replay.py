"""A bus restarted on its data directory holds what it held, whatever its policies."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import (
    GraphConfig,
    HashingEmbedderConfig,
    IndexBuild,
    IndexConfig,
    IndexKind,
    NamespaceMode,
    RetrievalMethod,
    StoreConfig,
    TierConfig,
)
from hivemem.memory_bus.embedder import make_embedder
from hivemem.memory_bus.errors import HivememError, InvalidInputError
from hivemem.memory_bus.interfaces import Caller, EvictionContext, Hit, WriteDecision
from hivemem.memory_bus.item import Item, NewItem, WriteOp
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.policies import EVICTION_POLICIES, WRITE_POLICIES
from hivemem.memory_bus.policies.learned import Scorer
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing import ContractFailure, check_replay, logical_state
from hivemem.memory_bus.testing.replay import first_difference

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


MODES = {
    "window-budget-khop": StoreConfig(
        dim=16,
        private=TierConfig(capacity=10, mode=NamespaceMode.WINDOW),
        shared=TierConfig(
            mode=NamespaceMode.TOKEN_BUDGET,
            token_budget=60,
            eviction="memorybank",
            write_policy="dedup",
        ),
        graph=GraphConfig(capacity=30, retrieval=RetrievalMethod.KHOP, history_limit=2),
    ),
    "budget-dedup-vector": StoreConfig(
        dim=16,
        private=TierConfig(
            mode=NamespaceMode.TOKEN_BUDGET, token_budget=40, eviction="generative_agents"
        ),
        shared=TierConfig(
            capacity=25,
            eviction="fifo",
            write_policy="dedup",
            write_params={"update_threshold": 0.5, "duplicate_threshold": 0.6},
        ),
        graph=GraphConfig(capacity=20, eviction="random", retrieval=RetrievalMethod.VECTOR),
    ),
}


@pytest.mark.parametrize("snapshot_every", [37, 100_000], ids=["snapshots", "log-only"])
@pytest.mark.parametrize("name", sorted(MODES))
def test_a_restarted_bus_holds_what_it_held_in_every_mode(
    tmp_path: Path, name: str, snapshot_every: int
) -> None:
    """Windows, token budgets, k-hop and vector retrieval. These found two defects: a
    k-hop read made an empty graph that failed the namespace's next eviction halfway
    (an internal error whose record the journal took back), and a promote whose parent
    evicted a child was refused after writing the parent (the same): both restarted to
    other edges and ids (seeds 0 and 1, the whole log replayed)."""
    for seed in range(2):
        check_replay(MODES[name], tmp_path / str(seed), seed=seed, snapshot_every=snapshot_every)


def test_a_restarted_bus_holds_what_learned_policies_decided(tmp_path: Path) -> None:
    """Learned eviction and write policies (untrained scorers: any weights must decide
    again as they decided; the write policy's DELETE and NOOP too)."""
    rng = np.random.default_rng(7)  # weights that add, update and delete
    evict = Scorer.init("eviction", 4, rng).save(tmp_path / "evict.json")
    write = Scorer.init("write", 0, rng).save(tmp_path / "write.json")
    learned = config(f"learned:{evict}", f"learned:{evict}", "lru", write=f"learned:{write}")
    for snapshot_every in (37, 100_000):
        live = check_replay(learned, tmp_path / str(snapshot_every), snapshot_every=snapshot_every)
        assert {"ADD", "UPDATE", "DELETE"} <= set(live["shared"]["decisions"])
        assert sum(ns["evictions"] for ns in live["private"]["namespaces"].values()) > 0


class _Unseeded:
    """Evicts at random from Python's global generator: not the namespace's seeded one."""

    name = "unseeded"
    feature_columns: frozenset[str] = frozenset()
    uses_relevance = False

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        return random.sample(range(len(candidates)), n)


class _Faulty:
    """LRU with a bug: every fifth eviction it fails, after the write has begun."""

    name = "faulty"
    feature_columns: frozenset[str] = frozenset({"since_access"})
    uses_relevance = False

    def __init__(self) -> None:
        self.calls = 0

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        self.calls += 1
        if self.calls % 5 == 0:
            raise RuntimeError("a bug in the policy")
        order = np.argsort(-features[:, 1], kind="stable")  # the longest since access first
        return [int(i) for i in order[:n]]


@pytest.fixture
def unseeded() -> Iterator[str]:
    EVICTION_POLICIES.register("unseeded")(_Unseeded)
    yield "unseeded"
    del EVICTION_POLICIES._factories["unseeded"]


@pytest.fixture
def faulty() -> Iterator[str]:
    EVICTION_POLICIES.register("faulty")(_Faulty)
    yield "faulty"
    del EVICTION_POLICIES._factories["faulty"]


def test_a_request_a_bug_fails_halfway_is_replayed_as_it_happened(
    tmp_path: Path, faulty: str
) -> None:
    """A bug (not a refusal) may have changed the store before it raised: the request
    is answered ``internal``, and its journal record stays, so that the replay, failing
    the same way, leaves the same store. Before, the record was taken back, and the
    restarted bus lacked what the failed request had changed."""
    live = check_replay(
        config(faulty, "lru", "lru"), tmp_path, snapshot_every=100_000, allow_plugin_errors=True
    )
    assert sum(ns["evictions"] for ns in live["private"]["namespaces"].values()) > 0


def test_a_policy_that_fails_writes_fails_the_check(tmp_path: Path, faulty: str) -> None:
    """The check went on past every request a policy failed (a user's policy raising at
    every eviction passed it, its replay failing alike); it names the policy now."""
    with pytest.raises(ContractFailure, match="policy 'faulty' failed it: eviction policy 'faulty' raised RuntimeError"):  # fmt: skip
        check_replay(config(faulty, "lru", "lru"), tmp_path, snapshot_every=100_000)


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


def test_a_promote_refused_after_its_parent_was_decided_is_replayed(tmp_path: Path) -> None:
    """The write policy finds the parent a duplicate (NOOP), so promote refuses, after
    the decision was counted: the journal keeps the record, and the restarted bus counts
    the same decisions."""
    config = StoreConfig(dim=8, graph=GraphConfig(write_policy="dedup"))
    secret = b"p" * 32
    vector = np.full(8, 8**-0.5, np.float32)
    server = BusServer(MemoryStore(config), secret=secret, journal=Journal(tmp_path, "no"))
    token = server.register("alice", ["team"])
    with server, MemoryClient(server.address, "alice", token) as alice:
        kids = [alice.write("graph", "team", NewItem(f"event {i}"), now=0.0).item_id for i in range(2)]  # fmt: skip
        alice.write("graph", "team", NewItem("the insight", vector=vector, level=1), now=1.0)
        with pytest.raises(InvalidInputError, match="decided NOOP"):
            alice.promote("team", kids, NewItem("the insight", vector=vector, level=1), now=2.0)
    live = logical_state(server.store)
    assert live["graph"]["decisions"]["NOOP"] == 1
    again = MemoryStore(config)
    with BusServer(again, secret=secret, journal=Journal(tmp_path, "no")):
        pass
    assert logical_state(again) == live


@pytest.mark.parametrize("journaled", [True, False])
@pytest.mark.parametrize(
    ("agent", "groups", "role", "field"),
    [
        (7, ["team"], "agent", "agent_id"),
        ("", [], "agent", "agent_id"),
        ("alice", "team", "agent", "groups"),
        ("alice", ["team", 3], "agent", "groups"),
        ("alice", [], None, "role"),
    ],
)
def test_a_bad_registration_is_refused_at_once(
    tmp_path: Path, journaled: bool, agent: Any, groups: Any, role: Any, field: str
) -> None:
    """Not at start, where a journaled registration is applied (nor ever, without a
    journal, where the registry took anything)."""
    journal = Journal(tmp_path, "no") if journaled else None
    server = BusServer(MemoryStore(StoreConfig(dim=8)), journal=journal)
    with pytest.raises(InvalidInputError, match=field):
        server.register(agent, groups, role)
    with server:  # and the server starts all the same
        assert server.inspect(lambda _: dict(server.registry.agents)) == {}


class _Coin:
    """ADD, UPDATE, DELETE or NOOP drawn from Python's global generator: decisions that
    asking the policy again on a replay would not make again."""

    name = "coin"

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        op = random.choice(list(WriteOp))
        if op in (WriteOp.UPDATE, WriteOp.DELETE):
            return WriteDecision(op, random.choice(neighbours).id) if neighbours else WriteDecision(WriteOp.ADD)  # fmt: skip
        return WriteDecision(op)


@pytest.fixture
def coin() -> Iterator[str]:
    WRITE_POLICIES.register("coin")(_Coin)
    yield "coin"
    del WRITE_POLICIES._factories["coin"]


def test_write_decisions_are_played_back_not_asked_again(tmp_path: Path, coin: str) -> None:
    """The write policy's decisions are journaled after their request and played back,
    so a restart holds the same items under the same ids whatever the policy read."""
    for snapshot_every in (37, 100_000):
        live = check_replay(
            config("lru", "lru", "lru", write=coin),
            tmp_path / str(snapshot_every),
            snapshot_every=snapshot_every,
        )
        assert set(live["shared"]["decisions"]) == {"ADD", "UPDATE", "DELETE", "NOOP"}


@pytest.mark.parametrize("seed", [1, 2])
def test_dedup_over_a_background_build_restarts_to_what_it_decided(
    tmp_path: Path, seed: int
) -> None:
    """``dedup`` over an HNSW namespace whose merges run on the builder thread: which
    writes search after a merge is installed depends on timing, and HNSW misses
    neighbours exact search finds, so the policy asked again on the replay decided
    otherwise (before decisions were journaled: 2,110 ids taken live, 2,089 replayed)."""
    index = IndexConfig(kind=IndexKind.HNSW, approx_threshold=1_024, build_batch=128,
                        build=IndexBuild.BACKGROUND, hnsw_m=4, hnsw_ef_search=8,
                        hnsw_ef_construction=8)  # fmt: skip
    dedup = {"update_threshold": 0.75, "duplicate_threshold": 0.9}
    config = StoreConfig(dim=16, shared=TierConfig(write_policy="dedup", write_params=dedup, index=index))  # fmt: skip
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((400, 16)).astype(np.float32)
    server = BusServer(MemoryStore(config), journal=Journal(tmp_path, "no"), snapshot_every=10**9)
    token = server.register("alice", ["team"])
    with server, MemoryClient(server.address, "alice", token, timeout=30.0) as alice:
        for b in range(120):
            vectors = basis[rng.integers(0, 400, 64)] + 0.5 * rng.standard_normal((64, 16)).astype(np.float32)  # fmt: skip
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            entries = [("team", NewItem(f"{b}.{i}", vector=v)) for i, v in enumerate(vectors)]
            alice.write_many("shared", entries, now=float(b))
    live = logical_state(server.store)
    assert len(live["shared"]["namespaces"]["team"]["items"]) > 1_024 + 128  # merged into HNSW
    again = MemoryStore(config)
    with BusServer(again, journal=Journal(tmp_path, "no")):
        pass
    assert first_difference(live, logical_state(again)) is None


def _restart(config: StoreConfig, data_dir: Path, secret: bytes) -> BusServer:
    return BusServer(MemoryStore(config), secret=secret, journal=Journal(data_dir, "no"))


def test_a_restart_under_another_write_policy_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    """Three near-identical facts acknowledged as ADDs under ``always_add``; the bus
    restarted under ``dedup``. Before, the replay asked ``dedup`` and merged them into
    one: items 2 and 3 were gone. The journal is replayed under the configuration it
    was written with, then the bus goes on under its own (a snapshot taken at once)."""
    secret, v = b"c" * 32, np.array([1, 0, 0, 0], np.float32)
    dedup = StoreConfig(dim=4, shared=TierConfig(write_policy="dedup", write_params={"update_threshold": 0.5}))  # fmt: skip
    first = _restart(StoreConfig(dim=4), tmp_path, secret)
    token = first.register("alice", ["team"])
    with first, MemoryClient(first.address, "alice", token) as alice:
        ids = [alice.write("shared", "team", NewItem(f"fact {i}", vector=v), now=float(i)).item_id for i in range(3)]  # fmt: skip
    second = _restart(dedup, tmp_path, secret)
    with second, MemoryClient(second.address, "alice", token) as alice:
        assert [alice.get("shared", "team", i).text for i in ids] == ["fact 0", "fact 1", "fact 2"]
        revised = alice.write("shared", "team", NewItem("fact 3", vector=v), now=5.0)
        assert revised.op == WriteOp.UPDATE  # the bus runs under dedup now
        live = second.inspect(lambda _: logical_state(second.store))
    assert not list(tmp_path.glob("journal.*.log"))  # the old log went into the snapshot
    third = _restart(dedup, tmp_path, secret)  # and again, under the same configuration
    with third:
        assert third.inspect(lambda _: logical_state(third.store)) == live


def test_a_restart_under_another_eviction_policy_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    """LRU kept the items read lately; a replay under FIFO would have evicted others."""
    secret, v = b"e" * 32, np.ones(4, np.float32)
    lru = StoreConfig(dim=4, private=TierConfig(capacity=3, eviction="lru"))
    first = _restart(lru, tmp_path, secret)
    token = first.register("alice", [])
    with first, MemoryClient(first.address, "alice", token) as alice:
        ids = []
        for i in range(6):
            ids.append(alice.write("private", "alice", NewItem(f"m{i}", vector=v), now=float(i)).item_id)  # fmt: skip
            alice.get("private", "alice", ids[0], now=float(i) + 0.5)  # the first stays recent
        kept = first.inspect(lambda _: sorted(first.store.private.namespaces["alice"].items))
    assert ids[0] in kept
    fifo = StoreConfig(dim=4, private=TierConfig(capacity=3, eviction="fifo"))
    second = _restart(fifo, tmp_path, secret)
    with second:
        assert second.inspect(lambda _: sorted(second.store.private.namespaces["alice"].items)) == kept  # fmt: skip


def test_a_data_directory_refuses_another_embedder_once_it_holds_items(tmp_path: Path) -> None:
    """Vectors of two embedders do not compare: a bus asked to embed with another one
    than its items were embedded with would answer every search with noise. Before
    ``StoreConfig.embedder`` existed, the texts in the log were embedded again by whatever
    the code's default was at the restart, and the snapshot's items kept the old vectors."""
    secret = b"m" * 32
    four, two = (StoreConfig(dim=32, embedder=HashingEmbedderConfig(hashes=h)) for h in (4, 2))
    empty = tmp_path / "empty"
    first = _restart(four, empty, secret)
    token = first.register("alice", [])
    with first:
        pass
    with _restart(two, empty, secret) as second:  # nothing embedded yet: a free choice
        assert json.loads((empty / "store_config.json").read_text())["embedder"]["hashes"] == 2
        with MemoryClient(second.address, "alice", token) as alice:
            kept = alice.write("private", "alice", NewItem("the red fox"), now=1.0).item_id
    _refused(_restart(four, empty, secret), r"holds 1 item\(s\) embedded by hashing \(bigrams=True, hashes=2\); this bus embeds with hashing \(bigrams=True, hashes=4\)")  # fmt: skip
    with _restart(two, empty, secret) as third, MemoryClient(third.address, "alice", token) as alice:  # fmt: skip
        query = make_embedder(HashingEmbedderConfig(hashes=2), 32)(["the red fox"])[0]
        hit = alice.search("private", "alice", query, k=1, now=2.0)[0]
        assert (hit.item.id, round(hit.score, 5)) == (kept, 1.0)
    written = json.loads((empty / "store_config.json").read_text())
    del written["embedder"]  # as a directory from before the embedder was kept
    (empty / "store_config.json").write_text(json.dumps(written))
    with _restart(four, empty, secret) as fourth:  # taken to be the bus's own: it cannot tell
        assert fourth.inspect(lambda _: sorted(fourth.store.private.namespaces["alice"].items)) == [kept]  # fmt: skip


def test_a_journal_whose_configuration_cannot_be_made_is_refused_clearly(
    tmp_path: Path, unseeded: str
) -> None:
    secret = b"u" * 32
    first = _restart(config(unseeded, "lru", "lru"), tmp_path, secret)
    with first:
        pass
    del EVICTION_POLICIES._factories["unseeded"]  # the plug-in is gone in the new process
    try:
        _refused(_restart(config("lru", "lru", "lru"), tmp_path, secret),
                 r"written under another store configuration .*private\.eviction.*unseeded")  # fmt: skip
    finally:
        EVICTION_POLICIES.register("unseeded")(_Unseeded)
    (tmp_path / "store_config.json").write_text('{"dim": 16, "from_a_later_version": 1}')
    _refused(_restart(config("lru", "lru", "lru"), tmp_path, secret), "not one this version reads")
    (tmp_path / "store_config.json").write_text("{not json")
    _refused(
        _restart(config("lru", "lru", "lru"), tmp_path, secret), r"store_config\.json is damaged"
    )


def _refused(server: BusServer, match: str) -> None:
    with pytest.raises(HivememError, match=match):
        server.start()
    server.stop()


def test_a_checkpoint_trained_again_in_place_replays_with_the_weights_that_decided(
    tmp_path: Path,
) -> None:
    """The same ``learned:PATH`` after the file was written over with new weights: the
    journal is replayed with the old weights (a copy the data directory keeps), also
    after the directory moved; the old copy goes once a snapshot holds its decisions."""
    secret, rng = b"l" * 32, np.random.default_rng(3)
    path = tmp_path / "evict.json"
    old, new = Scorer.init("eviction", 4, rng), Scorer.init("eviction", 4, rng)
    old.save(path)
    learned = StoreConfig(dim=4, private=TierConfig(capacity=3, eviction=f"learned:{path}"))
    first = _restart(learned, tmp_path / "bus", secret)
    token = first.register("alice", [])
    with first, MemoryClient(first.address, "alice", token) as alice:
        for i in range(12):
            v = rng.standard_normal(4).astype(np.float32)
            written = alice.write("private", "alice", NewItem(f"m{i}", vector=v / np.linalg.norm(v), importance=float(rng.random())), now=float(i))  # fmt: skip
            if i % 3 == 0:
                alice.get("private", "alice", written.item_id, now=i + 0.5)
        live = first.inspect(lambda _: logical_state(first.store))
    new.save(path)  # trained again, written over the old one
    moved = tmp_path / "moved"
    (tmp_path / "bus").rename(moved)
    second = _restart(learned, moved, secret)
    with second:
        assert second.inspect(lambda _: logical_state(second.store)) == live
    assert [p.read_bytes() for p in (moved / "checkpoints").glob("*.json")] == [path.read_bytes()]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (config("lru", "memorybank", "lfu"), config("fifo", "lru", "random", write="always_add")),
        (config("fifo", "lru", "random", write="always_add"), config("lru", "memorybank", "lfu")),
    ],
    ids=["dedup-to-always_add", "always_add-to-dedup"],
)
def test_a_bus_restarted_under_other_policies_holds_what_it_held(
    tmp_path: Path, before: StoreConfig, after: StoreConfig
) -> None:
    """Every tier's eviction policy and the shared write policy changed at the restart,
    the whole log replayed or a snapshot and its tail."""
    for snapshot_every in (37, 100_000):
        check_replay(before, tmp_path / str(snapshot_every), snapshot_every=snapshot_every, restart_config=after)  # fmt: skip


class _Revises:
    """Adds, but a proposal whose meta names an id updates that item (which may be gone)."""

    needs_neighbours = True

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        target = proposal.meta.get("revises")
        return WriteDecision(WriteOp.ADD) if target is None else WriteDecision(WriteOp.UPDATE, int(target))  # fmt: skip


@pytest.fixture
def revises() -> Iterator[str]:
    WRITE_POLICIES.register("revises")(_Revises)
    yield "revises"
    del WRITE_POLICIES._factories["revises"]


def test_a_batch_refused_after_its_first_rows_changed_the_store_keeps_them(
    tmp_path: Path, revises: str
) -> None:
    """A decision naming no item, in a batch's second row, is refused after the first
    row's ADD was applied. Before, the refusal was taken for one before any change: its
    journal record and its ids were taken back, so the next write got the id the store
    held (overwriting that item, with no event) and a restart lost the first row."""
    cfg = StoreConfig(dim=8, private=TierConfig(write_policy=revises))
    secret = b"r" * 32

    def bus() -> BusServer:
        return BusServer(MemoryStore(cfg), journal=Journal(tmp_path, "no"), secret=secret)

    first = bus()
    token = first.register("alice")
    batch = [("alice", NewItem("first")), ("alice", NewItem("second", meta={"revises": 777}))]
    with first, MemoryClient(first.address, "alice", token) as alice:
        with pytest.raises(HivememError, match=r"target=777.*must be an item of private/alice"):
            alice.write_many("private", batch, now=1.0)
        held = {i.id: i.text for i in alice.scan("private", "alice").items}
        assert list(held.values()) == ["first"]
        third = alice.write("private", "alice", NewItem("third"), now=2.0).item_id
        assert third not in held
        live = {i.id: i.text for i in alice.scan("private", "alice").items}
    assert live == {**held, third: "third"}
    again = bus()
    with again, MemoryClient(again.address, "alice", token) as alice:
        assert {i.id: i.text for i in alice.scan("private", "alice").items} == live
