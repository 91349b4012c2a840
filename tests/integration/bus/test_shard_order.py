"""A sharded client checks, once, that each address it lists is the shard at that place."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import WrongShardError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.placement import shard_of
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.sharding import ShardError
from hivemem.memory_bus.store import MemoryStore

CONFIG = StoreConfig(dim=32, shared=TierConfig(capacity=1000))


@pytest.fixture
def shards() -> Iterator[tuple[list[BusServer], bytes]]:
    secret = new_secret()
    servers = [BusServer(MemoryStore(CONFIG).as_shard(i, 2), secret=secret) for i in range(2)]
    for server in servers:
        server.start()
    admin = token_for(secret, ADMIN_AGENT)
    with MemoryClient([s.address for s in servers], ADMIN_AGENT, admin) as c:
        c.register("alice", ["team"])
        c.register("bob", ["team"])
    yield servers, secret
    for server in servers:
        server.stop()


def test_shards_listed_in_another_order_are_refused_before_any_request(
    shards: tuple[list[BusServer], bytes],
) -> None:
    """A client listing the shards in another order routed every namespace by the wrong
    hash: its writes went where the other clients never looked, silently."""
    servers, secret = shards
    addresses = [s.address for s in reversed(servers)]
    with MemoryClient(addresses, "alice", token_for(secret, "alice"), timeout=5.0) as c:
        place = shard_of("team", 2)  # where this client looks for it
        with pytest.raises(ShardError, match=rf"place {place} .* shard {1 - place} of 2") as info:
            c.write("shared", "team", NewItem("misrouted"), now=0.0)
        assert info.value.details["places"] == {str(place): [1 - place, 2]}
        with pytest.raises(ShardError, match=f"place {place}"):
            c.as_agent("bob", token_for(secret, "bob")).scan("shared", "team")
        with pytest.raises(ShardError, match=r"place 0 .*; place 1 "):
            c.ping()
    assert all(not s.store.shared.namespaces for s in servers)  # nothing was written


def test_shards_in_their_order_serve_and_ping_says_each_place(
    shards: tuple[list[BusServer], bytes],
) -> None:
    servers, secret = shards
    with MemoryClient(servers[1].address, "alice", token_for(secret, "alice")) as one:
        assert one.ping()["shard"] == [1, 2]  # each server says its place
    addresses = [s.address for s in servers]
    with MemoryClient(addresses, "alice", token_for(secret, "alice"), timeout=5.0) as c:
        written = c.write("shared", "team", NewItem("routed"), now=0.0).item_id
        assert [i.id for i in c.scan("shared", "team").items] == [written]
        assert c.ping()["shards"] == 2


def test_unsharded_servers_listed_as_shards_are_refused() -> None:
    secret = new_secret()
    a, b = (BusServer(MemoryStore(CONFIG), secret=secret) for _ in range(2))
    place = shard_of("alice", 2)
    with (
        a,
        b,
        MemoryClient([a.address, b.address], "alice", token_for(secret, "alice")) as c,
        pytest.raises(
            ShardError, match=rf"not the shards of one bus: place {place} .* shard 0 of 1.*0 of 1"
        ),
    ):
        c.write("private", "alice", NewItem("x"), now=0.0)


def test_a_shard_refuses_to_make_a_namespace_another_shard_owns(
    shards: tuple[list[BusServer], bytes],
) -> None:
    """A client of one shard alone (no placement check: it takes the shard for the whole
    bus) wrote `shared/team` onto whichever shard it was given. The shard that does not own
    the namespace now refuses to make it and applies nothing; the owner takes it, and
    the namespace it holds still takes writes and rows in batches."""
    servers, secret = shards
    owner = shard_of("team", 2)
    token = token_for(secret, "alice")
    with MemoryClient(servers[1 - owner].address, "alice", token, timeout=5.0) as stray:
        with pytest.raises(WrongShardError) as info:
            stray.write("shared", "team", NewItem("stray"), now=0.0)
        assert info.value.details == {
            "namespace": "team", "owner": owner, "index": 1 - owner, "count": 2,
        }  # fmt: skip
        with pytest.raises(WrongShardError):
            stray.write_many("shared", [("team", NewItem("a")), ("team", NewItem("b"))], now=0.0)
    assert "team" not in servers[1 - owner].store.shared.namespaces
    with MemoryClient(servers[owner].address, "alice", token, timeout=5.0) as direct:
        direct.write("shared", "team", NewItem("kept"), now=0.0)
        direct.write_many("shared", [("team", NewItem("a")), ("team", NewItem("b"))], now=1.0)
        assert len(direct.scan("shared", "team").items) == 3


def test_a_shard_refuses_reads_of_a_namespace_another_shard_owns(
    shards: tuple[list[BusServer], bytes],
) -> None:
    """Through a client of one shard alone, a read of another shard's namespace answered
    as if it were empty; it is refused now, and the shard that owns it answers. (A
    subscription is not refused: a sharded client asks every shard for its event
    socket with the same topics.)"""
    servers, secret = shards
    owner = shard_of("team", 2)
    token = token_for(secret, "alice")
    with MemoryClient(servers[owner].address, "alice", token, timeout=5.0) as direct:
        direct.write("shared", "team", NewItem("kept", vector=unit(1)), now=0.0)
    with MemoryClient(servers[1 - owner].address, "alice", token, timeout=5.0) as stray:
        with pytest.raises(WrongShardError, match="team"):
            stray.scan("shared", "team")  # before: an empty page
        with pytest.raises(WrongShardError):
            stray.search("shared", "team", unit(1), k=3, now=1.0)  # before: no hits
    with MemoryClient(servers[owner].address, "alice", token, timeout=5.0) as direct:
        assert [i.text for i in direct.scan("shared", "team").items] == ["kept"]
        assert direct.search("shared", "team", unit(1), k=3, now=1.0)[0].item.text == "kept"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
    return v / np.linalg.norm(v)
