"""A bus sharded by namespace: real servers on loopback sockets, a real Ray for runs.

Routing is by a stable hash of the namespace, batches are split per shard and merged back
in order, ``stats`` sums the shards, tokens hold on every shard, a dead shard is named in
the error, and a run gives the same rows on one shard as on several.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import BusTimeoutError, MemoryClient
from hivemem.memory_bus.config import HashingEmbedderConfig, StoreConfig, TierConfig
from hivemem.memory_bus.embedder import HashingEmbedder
from hivemem.memory_bus.errors import AccessDeniedError, HivememError, InvalidInputError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.placement import shard_of
from hivemem.memory_bus.protocol import ADMIN_AGENT, pack, unpack
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.sharding import (
    AsyncShardedClient,
    ShardError,
    split_addresses,
)
from hivemem.memory_bus.store import MemoryStore
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario

from .conftest import subscribed

DIM = 32
SHARDS = 3
GROUPS = [f"g{i}" for i in range(24)]


@dataclass
class Sharded:
    servers: list[BusServer]
    admin: MemoryClient
    alice: MemoryClient

    @property
    def address(self) -> str:
        return ",".join(s.address for s in self.servers)

    def namespaces_on(self, shard: int, tier: str = "shared") -> set[str]:
        return set(self.servers[shard].store.tier(tier).namespaces)


@pytest.fixture
def sharded() -> Iterator[Sharded]:
    secret = new_secret()
    config = StoreConfig(dim=DIM, shared=TierConfig(capacity=1000))
    servers = [
        BusServer(MemoryStore(config).as_shard(i, SHARDS), secret=secret).start()
        for i in range(SHARDS)
    ]
    address = ",".join(s.address for s in servers)
    admin = MemoryClient(address, ADMIN_AGENT, token_for(secret, ADMIN_AGENT), timeout=5.0)
    token = admin.register("alice", GROUPS)["token"]
    alice = admin.as_agent("alice", token)
    try:
        yield Sharded(servers, admin, alice)
    finally:
        admin.close()
        for server in servers:
            server.stop()


def embed(text: str) -> np.ndarray:
    return HashingEmbedder(DIM)([text])[0]


def test_the_shard_of_a_namespace_is_the_same_in_every_process() -> None:
    names = [f"team-{i}" for i in range(50)]
    here = [shard_of(n, 4) for n in names]
    code = (
        "from hivemem.memory_bus.placement import shard_of;"
        "print([shard_of(f'team-{i}', 4) for i in range(50)])"
    )
    for seed in ("1", "2"):  # Python's str hash() differs per seed; shard_of must not
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert eval(out.stdout) == here
    assert set(here) == {0, 1, 2, 3}, "50 namespaces should reach all 4 shards"
    assert split_addresses(" tcp://a:1, tcp://b:2 ") == ["tcp://a:1", "tcp://b:2"]


def test_each_namespace_lives_on_its_own_shard_only(sharded: Sharded) -> None:
    for g in GROUPS:
        sharded.alice.write("shared", g, NewItem(f"fact of {g}"), now=0.0)
        sharded.alice.write("graph", g, NewItem(f"node of {g}"), now=0.0)
    for shard in range(SHARDS):
        expected = {g for g in GROUPS if shard_of(g, SHARDS) == shard}
        assert sharded.namespaces_on(shard) == expected
        assert sharded.namespaces_on(shard, "graph") == expected
    assert all(sharded.namespaces_on(s) for s in range(SHARDS))


def test_batches_are_split_per_shard_and_merged_in_order(sharded: Sharded) -> None:
    entries = [(GROUPS[i % len(GROUPS)], NewItem(f"fact {i}")) for i in range(200)]
    results = sharded.alice.write_many("shared", entries, now=1.0)
    ids = [r.item_id for r in results]
    assert len(set(ids)) == 200, "shards must never hand out the same id"
    for (ns, item), item_id in zip(entries, ids, strict=True):
        assert sharded.alice.get("shared", ns, item_id).text == item.text
    queries = [(ns, embed(item.text), 1) for ns, item in reversed(entries)]
    hits = sharded.alice.search_many("shared", queries, now=2.0)
    assert [h[0].item.text for h in hits] == [item.text for _, item in reversed(entries)]
    pending = sharded.alice.nowait().search_many("shared", queries[:5], now=3.0)
    assert [h[0].id for h in pending.result()] == ids[::-1][:5]


def test_a_scan_pages_through_the_namespace_on_its_shard(sharded: Sharded) -> None:
    entries = [(GROUPS[i % 5], NewItem(f"fact {i}")) for i in range(60)]
    ids = [r.item_id for r in sharded.alice.write_many("shared", entries, now=1.0)]
    for group in GROUPS[:5]:
        listed: list[tuple[int, str]] = []
        page = sharded.alice.scan("shared", group, limit=5, vectors=False)
        while True:
            listed += [(item.id, item.text) for item in page.items]
            if page.next is None:
                break
            page = sharded.alice.scan("shared", group, after=page.next, limit=5, vectors=False)
        written = sorted((i, item.text) for i, (ns, item) in zip(ids, entries, strict=True) if ns == group)  # fmt: skip
        assert listed == written and len(written) == 12
    assert sharded.alice.scan("shared", GROUPS[7]).items == []  # on its shard, never written


def test_shards_that_embed_differently_are_named() -> None:
    secret = new_secret()
    configs = [StoreConfig(dim=DIM), StoreConfig(dim=DIM, embedder=HashingEmbedderConfig(hashes=2))]  # fmt: skip
    servers = [
        BusServer(MemoryStore(c).as_shard(i, 2), secret=secret).start()
        for i, c in enumerate(configs)
    ]
    try:
        address = ",".join(s.address for s in servers)
        admin = MemoryClient(address, ADMIN_AGENT, token_for(secret, ADMIN_AGENT), timeout=5.0)
        with admin, pytest.raises(ShardError, match=r"differently.*'hashes': 4.*shard 1.*'hashes': 2"):  # fmt: skip
            admin.ping()
    finally:
        for server in servers:
            server.stop()


def test_stats_sum_over_the_shards(sharded: Sharded) -> None:
    entries = [(GROUPS[i % len(GROUPS)], NewItem(f"fact {i}")) for i in range(90)]
    sharded.alice.write_many("shared", entries, now=1.0)
    stats = sharded.admin.stats()
    per_shard = [s.store.stats()["shared"] for s in sharded.servers]
    assert stats["shared"]["items"] == 90 == sum(p["items"] for p in per_shard)
    assert stats["shared"]["namespaces"] == len(GROUPS)
    assert stats["shared"]["decisions"] == {"ADD": 90}  # the admin's: every namespace's
    assert sharded.alice.stats()["shared"]["items"] == 90  # all in her groups
    assert stats["shared"]["eviction_policy"] == per_shard[0]["eviction_policy"]
    assert sharded.alice.ping()["shards"] == SHARDS


def test_graph_subtrees_and_retrieval_stay_on_one_shard(sharded: Sharded) -> None:
    for g in GROUPS[:6]:
        a = sharded.alice.write("graph", g, NewItem(f"door A of {g}"), now=0.0).item_id
        b = sharded.alice.write("graph", g, NewItem(f"door B of {g}"), now=0.0).item_id
        sharded.alice.add_edge(g, a, b, "next_to", now=0.0)
        parent = sharded.alice.promote(g, [a, b], NewItem(f"doors of {g}", level=1), now=1.0)
        assert sorted(sharded.alice.neighbors(g, parent, direction="out")) == sorted([a, b])
        hits = sharded.alice.retrieve(g, embed(f"door A of {g}"), k=3, now=2.0, method="ppr")
        assert {h.id for h in hits} == {a, b, parent}
        owner = sharded.servers[shard_of(g, SHARDS)].store.graph
        assert len(owner.namespaces[g].items) == 3


def test_a_token_holds_on_every_shard_and_access_is_checked_on_each(sharded: Sharded) -> None:
    token = sharded.admin.register("bob", ["g0"])["token"]
    bob = sharded.admin.as_agent("bob", token)
    assert bob.write("shared", "g0", NewItem("bob was here"), now=0.0).item_id > 0
    outsider = next(g for g in GROUPS if shard_of(g, SHARDS) != shard_of("g0", SHARDS))
    with pytest.raises(AccessDeniedError):
        bob.write_many("shared", [("g0", NewItem("ok")), (outsider, NewItem("no"))], now=1.0)


def test_events_come_from_every_shard_in_one_stream(sharded: Sharded) -> None:
    by_shard: dict[int, list[str]] = {}
    for group in GROUPS:
        by_shard.setdefault(shard_of(group, SHARDS), []).append(group)
    watched = [names[0] for names in by_shard.values()]  # one namespace on each shard
    unwatched = by_shard[0][1]
    admin_token = sharded.admin.token
    alice_token = sharded.alice.token

    async def drain(stream: AsyncIterator[dict[str, Any]]) -> set[str]:
        got = set()
        try:
            while True:
                got.add((await asyncio.wait_for(stream.__anext__(), 1.0))["namespace"])
        except TimeoutError:
            return got

    async def run() -> tuple[set[str], set[str]]:
        alice = AsyncShardedClient(split_addresses(sharded.address), "alice", alice_token)
        admin = alice.as_agent(ADMIN_AGENT, admin_token)
        with pytest.raises(AccessDeniedError):  # refused on its shard, raised here
            await alice.events(["private/bob"]).__anext__()
        granted = await alice.subscribe([f"shared/{watched[0]}"])  # asked of every shard
        assert granted["shards"] == SHARDS and len(set(granted["pubs"])) == SHARDS
        mine = alice.events([f"shared/{name}" for name in watched])
        every = admin.events(["shared/"])  # a whole tier: every shard
        pending = [asyncio.ensure_future(s.__anext__()) for s in (mine, every)]
        for server in sharded.servers:  # each shard's SUBs join and are subscribed
            await subscribed(server, 2)  # alice's namespace on it, the admin's tier
        for name in [*watched, unwatched]:
            await alice.write("shared", name, NewItem(f"in {name}"), now=0.0)
        firsts = [(await asyncio.wait_for(p, 5))["namespace"] for p in pending]
        got = (await drain(mine)) | {firsts[0]}, (await drain(every)) | {firsts[1]}
        alice.close()
        return got

    mine, every = asyncio.run(run())
    assert len(watched) == SHARDS
    assert mine == set(watched)
    assert every == {*watched, unwatched}


def test_a_dead_shard_is_named_and_the_others_keep_serving(sharded: Sharded) -> None:
    dead = shard_of("g0", SHARDS)
    alive = next(g for g in GROUPS if shard_of(g, SHARDS) != dead)
    address = sharded.servers[dead].address
    sharded.servers[dead].stop()
    with MemoryClient(sharded.address, "alice", sharded.alice.token, timeout=0.3, retries=0) as c:
        with pytest.raises(BusTimeoutError, match=address.replace(".", r"\.")):
            c.write("shared", "g0", NewItem("lost"), now=0.0)
        with pytest.raises(BusTimeoutError, match=address.replace(".", r"\.")):
            c.write_many("shared", [(alive, NewItem("a")), ("g0", NewItem("b"))], now=0.0)
        assert c.write("shared", alive, NewItem("still served"), now=1.0).item_id > 0


SMALL = {
    "relay_qa": ["run.ticks=12", "agents.0.count=2", "agents.1.count=4"],
    "team_insights": ["run.ticks=20", "agents.0.count=3", "agents.1.count=3", "agents.2.count=2"],
    "capacity_stream": ["run.ticks=40", "agents.0.count=6"],
}


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_one_shard_and_three_shards_give_the_same_rows(name: str) -> None:
    one = run_once(load_scenario(name, [*SMALL[name], "run.bus_shards=1"]), hosts=2)
    three = load_scenario(name, [*SMALL[name], "run.bus_shards=3"])
    spread = {shard_of(s.agent_id, 3) for s in three.roster()}
    assert len(spread) > 1, "the private namespaces should land on several shards"
    assert run_once(three, hosts=2).rows == one.rows
    assert one.summary["score"] > 0.5


@pytest.mark.usefixtures("ray_session")
def test_shards_as_ray_actors_give_the_embedded_rows() -> None:
    embedded = run_once(load_scenario("relay_qa", SMALL["relay_qa"]), hosts=2)
    remote = run_once(
        load_scenario("relay_qa", [*SMALL["relay_qa"], "run.bus_shards=2"]), remote=True, hosts=2
    )
    assert remote.rows == embedded.rows


@pytest.mark.usefixtures("ray_session")
def test_the_scenario_sets_busy_polling_on_embedded_and_actor_shards() -> None:
    import ray
    from hivemem.platform.runner import _Bus

    scenario = load_scenario(
        "relay_qa", [*SMALL["relay_qa"], "run.bus_shards=2", "run.bus_spin_us=300"]
    )
    for remote in (False, True):
        bus = _Bus(scenario, remote, f"spin-{int(remote)}", None)
        try:
            if remote:
                spins = ray.get([actor.spin_us.remote() for actor in bus.actors])
            else:
                spins = [round(server.spin_s * 1e6) for server in bus.servers]
            assert spins == [300, 300]
        finally:
            bus.close()


def test_subscribe_answers_each_topic_from_the_shard_that_holds_it(sharded: Sharded) -> None:
    """Shard 0's answer stood for every topic: its event numbers were 0 for a namespace
    living on another shard that had events."""
    far = next(g for g in GROUPS if shard_of(g, SHARDS) != 0)
    for n in range(3):
        sharded.alice.write("shared", far, NewItem(f"n{n}"), now=float(n))
    near = next(g for g in GROUPS if shard_of(g, SHARDS) == 0)
    granted = sharded.alice.subscribe([f"shared/{far}", f"shared/{near}"])
    assert granted["seqs"] == [3, 0]
    assert granted["pubs"] == [s.pub_address for s in sharded.servers]
    assert len(granted["epochs"]) == SHARDS


def test_a_refused_row_is_named_as_sent_with_the_rows_other_shards_applied(
    sharded: Sharded,
) -> None:
    """A sharded write_many is not atomic: one shard refusing its part left the others'
    parts applied, and the error numbered the row within that shard's part alone."""
    refused = "rivals"  # not one of alice's groups
    home = shard_of(refused, SHARDS)
    beside = next(g for g in GROUPS if shard_of(g, SHARDS) == home)
    away = [g for g in GROUPS if shard_of(g, SHARDS) != home][:3]
    entries = [
        (away[0], NewItem("a")),
        (beside, NewItem("refused with its shard's part")),
        (away[1], NewItem("b")),
        (refused, NewItem("not hers")),  # its shard's row 1, the caller's row 3
        (away[2], NewItem("c")),
    ]
    with pytest.raises(AccessDeniedError) as caught:
        sharded.alice.write_many("shared", entries, now=0.0)
    error = caught.value
    assert error.details["row"] == 3 and "items[3]" in str(error)
    applied = error.details["applied"]
    assert [result["row"] for result in applied] == [0, 2, 4]
    for result in applied:
        namespace, item = entries[result["row"]]
        assert result["op"] == "ADD"
        assert sharded.alice.get("shared", namespace, result["item_id"]).text == item.text
    assert error.details["refused"] == [1, 3] and error.details["unknown"] == []
    assert sharded.alice.scan("shared", beside).items == []


class DroppedReplies:
    """A ROUTER/DEALER relay on 127.0.0.1 to a real bus that forwards every request and
    drops every reply but the first (the ping a sharded client checks the shard's place
    with): a shard that applies its part, but whose answer never comes."""

    def __init__(self, target: str) -> None:
        self.ctx = zmq.Context()
        self.front, self.back = self.ctx.socket(zmq.ROUTER), self.ctx.socket(zmq.DEALER)
        for sock in (self.front, self.back):
            sock.setsockopt(zmq.LINGER, 0)
        self.address = f"tcp://127.0.0.1:{self.front.bind_to_random_port('tcp://127.0.0.1')}"
        self.back.connect(target)
        self.stop = threading.Event()
        self.pinged = False
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(50):
                if sock is self.front:
                    peer, *frames = self.front.recv_multipart()
                    self.back.send_multipart(frames)
                elif self.pinged:
                    self.back.recv_multipart()  # the reply, dropped
                else:
                    self.pinged = True
                    self.front.send_multipart([peer, *self.back.recv_multipart()])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.front.close(linger=0)
        self.back.close(linger=0)
        self.ctx.term()


def test_a_split_write_many_error_gives_every_parts_outcome_as_plain_data(
    sharded: Sharded,
) -> None:
    """Only the first failure was raised: the rows of a shard that applied its part but
    whose reply was lost appeared nowhere (a caller resending "the rest" wrote them
    twice), and ``details["applied"]`` held WriteResults, which msgpack and json refuse."""
    relay = DroppedReplies(sharded.servers[2].address)
    addresses = [s.address for s in sharded.servers[:2]] + [relay.address]
    client = MemoryClient(addresses, "alice", sharded.alice.token, timeout=1.0, retries=0)
    on = {s: [g for g in GROUPS if shard_of(g, SHARDS) == s] for s in range(SHARDS)}
    refused = next(n for n in ["rivals", "x", "y", "z", "w"] if shard_of(n, SHARDS) == 0)
    entries = [
        (on[2][0], NewItem("row 0, its reply lost")),
        (on[1][0], NewItem("row 1, applied")),
        (refused, NewItem("row 2, not hers")),
        (on[2][1], NewItem("row 3, its reply lost")),
    ]
    try:
        with pytest.raises(AccessDeniedError) as caught:
            client.write_many("shared", entries, now=0.0)
    finally:
        client.close()
        relay.close()
    details = caught.value.details
    assert details["row"] == 2 and details["refused"] == [2] and details["unknown"] == [0, 3]
    [applied] = details["applied"]
    assert applied == {"row": 1, "op": "ADD", "item_id": applied["item_id"], "evicted": []}
    assert sharded.alice.get("shared", on[1][0], applied["item_id"]).text == "row 1, applied"
    for row in (0, 3):  # applied for all the error could know: its rows must be named
        assert [i.text for i in sharded.alice.scan("shared", entries[row][0]).items] == [
            entries[row][1].text
        ]
    outcomes = {p["shard"]: (p["rows"], p["outcome"]) for p in details["parts"]}
    assert outcomes == {0: ([2], "refused"), 1: ([1], "applied"), 2: ([0, 3], "unknown")}
    assert [p.get("code") for p in details["parts"]] == ["access_denied", None, "timeout"]
    assert unpack(pack(details)) == details
    assert json.loads(json.dumps(details)) == details
    message = str(caught.value)
    assert "rows 2 refused" in message and "safe to send again" in message
    assert "rows 0, 3 of unknown outcome" in message


def test_a_field_error_in_a_split_batch_names_the_callers_row(sharded: Sharded) -> None:
    """A batch's column checks name ``items[i].<field>`` without ``details.row``: the
    shard's own numbering was passed on (``items[1]`` for the caller's row 2, with no
    row); and a search_many query alone on its shard was named ``items[1].k``."""
    on = {s: [g for g in GROUPS if shard_of(g, SHARDS) == s] for s in range(SHARDS)}
    vector, long = np.ones(DIM, np.float32), "x" * 40_000
    cases = {
        "columns, 2nd on its shard": (
            lambda: sharded.alice.write_many(
                "shared",
                [(on[0][0], NewItem("a")), (on[1][0], NewItem("b")), (on[1][1], NewItem(long))],
                now=0.0,
            ),
            "items[2].text",
            2,
        ),
        "rows, 2nd on its shard": (
            lambda: sharded.alice.write_many(
                "shared",
                [
                    (on[0][0], NewItem("a", vector=vector)),
                    (on[1][0], NewItem("b")),
                    (on[1][1], NewItem(long)),
                ],
                now=0.0,
            ),
            "items[2].text",
            2,
        ),
        "columns, alone on its shard": (
            lambda: sharded.alice.write_many(
                "shared",
                [(on[0][0], NewItem("a")), (on[1][0], NewItem(long)), (on[0][1], NewItem("b"))],
                now=0.0,
            ),
            "items[1].text",
            1,
        ),
        "search_many, alone on its shard": (
            lambda: sharded.alice.search_many(
                "shared",
                [(on[0][0], vector, 3), (on[1][0], vector, 0), (on[0][1], vector, 3)],
                now=None,
            ),
            "queries[1].k",
            1,
        ),
    }
    for name, (call, field, row) in cases.items():
        with pytest.raises(InvalidInputError) as caught:
            call()
        error = caught.value
        assert (error.field, error.details["row"]) == (field, row), name
        assert str(error).startswith(f"invalid {field}:"), name


def test_batches_the_client_cannot_split_are_refused_as_one_bus_refuses_them(
    sharded: Sharded,
) -> None:
    """Found by ``test_shard_differential.py``: the client refused these itself with a
    ``ShardError`` (or crashed: ValueError, IndexError, TypeError), and answered ``[]``
    to an empty batch of an unknown tier or a NaN ``now``, which one bus refuses."""
    alice, three = sharded.alice, ["g0", "g1", "g2"]
    assert len({shard_of(g, SHARDS) for g in three}) > 1
    cases: list[tuple[Any, str, Any, Any]] = [
        (
            lambda: alice.write_many_encoded(
                "shared", {"namespace": three, "text": "abc"}, now=0.0
            ),
            "bad_request",
            "text",
            None,
        ),
        (
            lambda: alice.write_many_encoded(
                "shared",
                {"namespace": three, "text": ["a", "b", "c"], "vector": b"\0" * 13},
                now=0.0,
            ),
            "bad_request",
            "columns.vector",
            None,
        ),
        (
            lambda: alice.write_many_encoded(
                "shared", {"namespace": three[:2], "text": ["a", "b", "c"]}, now=0.0
            ),
            "invalid",
            "items[].namespace",
            None,
        ),
        (
            lambda: alice.write_many_encoded(
                "shared",
                {"namespace": three, "text": ["a", "b", "c"], "importance": [1.0]},
                now=0.0,
            ),
            "invalid",
            "items[].importance",
            None,
        ),
        (
            lambda: alice.write_many_encoded(
                "shared", [{"namespace": "g0", "item": {"text": "a"}}, 5], now=0.0
            ),
            "bad_request",
            None,
            1,
        ),
        (
            lambda: alice.search_many("shared", [("g0", "a", 1), (3, "a", 1)], now=0.0),
            "bad_request",
            "queries[1].namespace",
            1,
        ),
        (
            lambda: alice.write_many_encoded("bogus", {"namespace": [], "text": []}, now=0.0),
            "unknown_name",
            None,
            None,
        ),
        (lambda: alice.search_many("shared", [], now=float("nan")), "non_finite", "now", None),
        (
            lambda: alice.write_many(
                "shared", [("g0", NewItem("a")), ("g2", NewItem("b"))], now=float("nan")
            ),
            "non_finite",
            "now",
            None,
        ),
    ]
    for i, (call, code, field, row) in enumerate(cases):
        with pytest.raises(HivememError) as caught:
            call()
        error = caught.value
        assert (error.code, error.details.get("field"), error.details.get("row")) == (code, field, row), i  # fmt: skip
    assert sum(len(sharded.namespaces_on(s)) for s in range(SHARDS)) == 0, "nothing applied"


def test_a_refused_part_of_one_namespace_is_named_by_the_callers_row(sharded: Sharded) -> None:
    """A part whose rows are of one namespace and writer has its access checked once,
    naming no row: the error named none, where one bus names the first such row."""
    token = sharded.admin.register("bob", ["g0"])["token"]
    bob = sharded.admin.as_agent("bob", token)
    outsider = next(g for g in GROUPS if shard_of(g, SHARDS) != shard_of("g0", SHARDS))
    entries = [("g0", NewItem("a")), (outsider, NewItem("b")), (outsider, NewItem("c"))]
    with pytest.raises(AccessDeniedError) as caught:
        bob.write_many("shared", entries, now=0.0)
    assert caught.value.details["row"] == 1 and "(items[1])" in str(caught.value)


def test_a_refused_search_many_names_the_queries_other_shards_answered(sharded: Sharded) -> None:
    """One bus refuses a search_many whole, recalling nothing; split over shards, the
    other shards' queries were answered and recalled, and the error did not say so."""
    mine = "g0"
    refused = next(n for n in ["rivals", "x", "y", "z"] if shard_of(n, SHARDS) != shard_of(mine, SHARDS))  # fmt: skip
    item_id = sharded.alice.write("shared", mine, NewItem("door"), now=0.0).item_id
    with pytest.raises(AccessDeniedError) as caught:
        sharded.alice.search_many("shared", [(mine, "door", 1), (refused, "door", 1)], now=5.0)
    details = caught.value.details
    assert details["row"] == 1 and details["answered"] == [0] and details["refused"] == [1]
    assert "queries 0 answered" in str(caught.value)
    assert sharded.alice.get("shared", mine, item_id).hits == 1  # recalled: documented
