"""A client learns from ``ping`` how the bus embeds, and embeds alike."""

from __future__ import annotations

import asyncio

import pytest
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.embedder import HashingEmbedder
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.item import NewItem
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
        sharded = AsyncShardedClient([bus.server.address] * 2, "alice", token, timeout=5.0)
        async with alice, sharded:
            emb = await alice.embedder()
            assert (emb.dim, emb.hashes) == (DIM, 4)
            assert (await sharded.embedder()).hashes == 4
        assert alice._transport.ctx.closed and all(s._transport.ctx.closed for s in sharded.shards)

    asyncio.run(main())


def test_a_bus_given_an_embedder_object_does_not_describe_it() -> None:
    store = MemoryStore(StoreConfig(dim=DIM), embedder=HashingEmbedder(DIM, hashes=2))
    server = BusServer(store)
    token = server.register("alice", [])
    with server, MemoryClient(server.address, "alice", token, timeout=5.0) as alice:
        assert alice.ping()["embedder"] is None
        with pytest.raises(ConfigError, match="does not say how it embeds"):
            alice.embedder()
