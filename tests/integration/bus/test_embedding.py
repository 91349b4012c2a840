"""A client learns from ``ping`` how the bus embeds, and embeds alike."""

from __future__ import annotations

import asyncio

import pytest
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.embedder import HashingEmbedder
from hivemem.memory_bus.errors import ConfigError, InvalidInputError, TooLargeError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import ProtocolError
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.sharding import AsyncShardedClient
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, Bus


def test_a_client_embeds_as_the_bus_does(bus: Bus, alice: MemoryClient) -> None:
    found = alice.ping()
    assert (found["dim"], found["embedder"]) == (DIM, {"name": "hashing", "hashes": 4, "bigrams": True})  # fmt: skip
    kept = alice.write("private", "alice", NewItem("the red fox sleeps"), now=1.0).item_id
    alice.write("private", "alice", NewItem("a quiet harbour at dawn"), now=1.0)
    query = alice.embedder()(["the red fox sleeps"])[0]
    [hit] = alice.search("private", "alice", query, k=1, now=2.0)
    assert (hit.item.id, round(hit.score, 5)) == (kept, 1.0)


def test_the_async_and_sharded_clients_embed_alike(bus: Bus) -> None:
    async def main() -> None:
        token = bus.tokens["alice"]
        alice = AsyncMemoryClient(bus.server.address, "alice", token, timeout=5.0)
        # one shard: a server listed twice is refused (it is shard 0 of 1 at both places)
        sharded = AsyncShardedClient([bus.server.address], "alice", token, timeout=5.0)
        async with alice, sharded:
            emb = await alice.embedder()
            assert (emb.dim, emb.hashes) == (DIM, 4)
            assert (await sharded.embedder()).hashes == 4
        transports = [alice._transport, *(s._transport for s in sharded.shards)]
        assert all(t._closed and t._sock is None for t in transports)

    asyncio.run(main())


def test_a_bus_given_an_embedder_object_does_not_describe_it() -> None:
    store = MemoryStore(StoreConfig(dim=DIM), embedder=HashingEmbedder(DIM, hashes=2))
    server = BusServer(store)
    token = server.register("alice", [])
    with server, MemoryClient(server.address, "alice", token, timeout=5.0) as alice:
        assert alice.ping()["embedder"] is None
        with pytest.raises(ConfigError, match="does not say how it embeds"):
            alice.embedder()


def test_a_query_may_be_a_text_the_bus_embeds(bus: Bus, alice: MemoryClient) -> None:
    kept = alice.write("private", "alice", NewItem("the red fox sleeps"), now=1.0).item_id
    other = alice.write("private", "alice", NewItem("a quiet harbour at dawn"), now=1.0).item_id
    [hit] = alice.search("private", "alice", "the red fox sleeps", k=1, now=2.0)
    assert (hit.item.id, round(hit.score, 5)) == (kept, 1.0)
    vector = alice.embedder()(["a quiet harbour at dawn"])[0]
    found = alice.search_many("private", [("alice", "red fox", 1), ("alice", vector, 1), ("alice", "harbour at dawn", 1)], now=3.0)  # fmt: skip
    assert [h[0].item.id for h in found] == [kept, other, other]
    node = alice.write("graph", "team", NewItem("door B is open"), now=1.0).item_id
    assert [h.id for h in alice.retrieve("team", "door B is open", k=1, now=2.0)] == [node]
    both = {"tier": "private", "namespace": "alice", "text": "fox", "vector": vector.tobytes(), "now": 4.0}  # fmt: skip
    with pytest.raises(ProtocolError, match="not both"):
        alice._call("search", both)
    with pytest.raises(TooLargeError, match=r"queries\[1\]\.text"):
        alice.search_many("private", [("alice", "fox", 1), ("alice", "x" * 40_000, 1)], now=4.0)
    with pytest.raises(ProtocolError, match="text") as wrong_type:  # a wrong type: bad_request
        alice._call("search", {"tier": "private", "namespace": "alice", "text": 5, "now": 4.0})
    assert wrong_type.value.code == "bad_request"
    assert alice.search("private", "alice", "fox", k=1, now=5.0)[0].item.id == kept  # still serving


def test_a_text_query_to_a_bus_that_does_not_embed_is_refused() -> None:
    server = BusServer(MemoryStore(StoreConfig(dim=DIM), embed=False))
    token = server.register("alice", [])
    with server, MemoryClient(server.address, "alice", token, timeout=5.0) as alice:
        with pytest.raises(InvalidInputError, match="no embedder"):
            alice.search("private", "alice", "fox", k=1, now=1.0)
        assert alice.ping()["embedder"] is None
