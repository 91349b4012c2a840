"""``scan`` through a real server: pages in id order, with and without vectors, refusals;
and searches without ``now``, which look as ``scan`` does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.errors import AccessDeniedError, InvalidInputError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal

from .conftest import DIM, Bus, make_server


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def written(alice: MemoryClient) -> dict[int, int]:
    """Write 10 items in one batch and 3 alone; each id with its vector's seed."""
    batch = alice.write_many("private", [("alice", NewItem(f"batch {i}", vector=vec(i))) for i in range(10)], now=1.0)  # fmt: skip
    ids = {r.item_id: i for i, r in enumerate(batch)}
    for i in range(10, 13):
        ids[
            alice.write("private", "alice", NewItem(f"one {i}", vector=vec(i)), now=2.0).item_id
        ] = i
    return ids


def test_pages_through_a_namespace_with_the_sync_client(alice: MemoryClient) -> None:
    ids = written(alice)
    listed, after, pages = [], 0, 0
    while after is not None:
        page = alice.scan("private", "alice", after=after, limit=4)
        listed += page.items
        after, pages = page.next, pages + 1
    assert pages == 4 and [it.id for it in listed] == sorted(ids)
    for item in listed:
        np.testing.assert_allclose(item.vector, vec(ids[item.id]), rtol=1e-6)
        assert item.hits == 0  # a listing is not a recall
    bare = alice.scan("private", "alice", limit=100, vectors=False)
    assert [it.id for it in bare.items] == sorted(ids) and bare.next is None
    assert all(it.vector.size == 0 for it in bare.items)
    assert alice.get("private", "alice", listed[0].id).hits == 0


def test_pages_through_a_namespace_with_the_async_client(bus: Bus, alice: MemoryClient) -> None:
    ids = written(alice)

    async def run() -> list[int]:
        client = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"], timeout=5.0)
        try:
            out, after = [], 0
            while after is not None:
                page = await client.scan("private", "alice", after=after, limit=5)
                out += [it.id for it in page.items]
                after = page.next
            return out
        finally:
            client.close()

    assert asyncio.run(run()) == sorted(ids)


def test_refusals_leave_the_server_serving(bus: Bus, alice: MemoryClient) -> None:
    ids = written(alice)
    with bus.client("bob", timeout=5.0) as bob:
        with pytest.raises(AccessDeniedError):
            bob.scan("private", "alice")
        assert bob.scan("private", "bob").items == []
    with pytest.raises(InvalidInputError, match="limit"):
        alice.scan("private", "alice", limit=0)
    with pytest.raises(InvalidInputError, match="after"):
        alice.scan("private", "alice", after=-3)
    assert [it.id for it in alice.scan("private", "alice", limit=50).items] == sorted(ids)


def test_a_search_without_now_is_a_look_the_journal_does_not_keep(tmp_path: Path) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "no"))
    log = tmp_path / "journal.log"
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as alice:
        ids = written(alice)
        alice.write("graph", "team", NewItem("a node", vector=vec(0)), now=1.0)
        size = log.stat().st_size
        looks = [
            alice.search("private", "alice", vec(3), 2, now=None),
            *alice.search_many("private", [("alice", vec(4), 2)], now=None),
            alice.retrieve("team", vec(0), 1, now=None, method="ppr"),
        ]
        assert looks[0][0].id != looks[1][0].id  # real hits, of two queries
        assert looks[2] and all(h.item.hits == 0 for hits in looks for h in hits)
        assert log.stat().st_size == size  # nothing to journal
        [recalled] = alice.search("private", "alice", vec(3), 1, now=9.0)
        assert log.stat().st_size > size and ids[recalled.id] == 3
    with Journal(tmp_path, "no") as journal:
        records = [r for r in journal.replay() if r.get("op") == "recall"]
    assert [r["now"] for r in records] == [9.0]
