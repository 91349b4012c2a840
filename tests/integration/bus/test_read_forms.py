"""Optional read forms of the protocol: compact hit rows, hits without vectors, replies
over the size limit, and requests kept in flight with ``nowait``."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.client import MemoryClient, encode_write_entries
from hivemem.memory_bus.codec import decode_hit, vector_to_bytes
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import decode_reply, encode_request

from .conftest import DIM, Bus


def seed(alice: MemoryClient, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = [("team", NewItem(f"fact {i}", vectors[i], {"i": i})) for i in range(n)]
    alice.write_many_encoded("shared", encode_write_entries(entries), now=0.0)
    return vectors


def raw_search(
    bus: Bus, dealer: zmq.Socket[bytes], vector: np.ndarray, **flags: object
) -> list[dict]:
    args = {
        "tier": "shared",
        "namespace": "team",
        "vector": vector_to_bytes(vector),
        "k": 5,
        "now": 1.0,
    }
    dealer.send_multipart(
        encode_request(1, 99, "search", "alice", bus.tokens["alice"], {**args, **flags})
    )
    reply = decode_reply(dealer.recv_multipart())
    assert reply.ok, reply.error
    return reply.result  # type: ignore[no-any-return]


def test_compact_rows_decode_to_the_same_hits_as_maps(
    bus: Bus, alice: MemoryClient, dealer: zmq.Socket[bytes]
) -> None:
    vectors = seed(alice, 20)
    maps = raw_search(bus, dealer, vectors[3])
    rows = raw_search(bus, dealer, vectors[3], compact=True)
    assert isinstance(maps[0], dict) and isinstance(rows[0], list)
    a, b = [decode_hit(h) for h in maps], [decode_hit(h) for h in rows]
    assert [h.id for h in a] == [h.id for h in b] and a[0].item.meta == {"i": 3}
    assert [h.score for h in a] == [h.score for h in b]
    assert all(np.array_equal(x.item.vector, y.item.vector) for x, y in zip(a, b, strict=True))


def test_hits_without_vectors_are_the_same_hits(alice: MemoryClient) -> None:
    vectors = seed(alice, 20)
    full = alice.search("shared", "team", vectors[7], 5, now=1.0)
    lean = alice.search("shared", "team", vectors[7], 5, now=1.0, vectors=False)
    assert [(h.id, h.score, h.item.text) for h in full] == [
        (h.id, h.score, h.item.text) for h in lean
    ]
    assert full[0].item.vector.shape == (DIM,)
    assert lean[0].item.vector.size == 0
    many = alice.search_many("shared", [("team", vectors[7], 5)] * 3, now=1.0, vectors=False)
    assert [[h.id for h in hits] for hits in many] == [[h.id for h in lean]] * 3


def test_a_reply_over_the_limit_is_an_error_and_the_server_serves_on(alice: MemoryClient) -> None:
    vectors = seed(alice, 600)
    queries = [("team", vectors[i % 600], 600) for i in range(200)]  # ~120k hits, ~30 MB
    with pytest.raises(HivememError) as err:
        alice.search_many("shared", queries, now=1.0)
    assert err.value.code == "too_large"
    hits = alice.search_many("shared", queries[:2], now=1.0, vectors=False)
    assert len(hits) == 2 and len(hits[0]) == 600


def test_nowait_keeps_requests_in_flight_and_returns_what_blocking_calls_return(
    alice: MemoryClient,
) -> None:
    vectors = seed(alice, 30)
    futures = [alice.nowait().search("shared", "team", vectors[i], 3, now=1.0) for i in range(10)]
    blocking = [alice.search("shared", "team", vectors[i], 3, now=1.0) for i in range(10)]
    got = [f.result(timeout=10) for f in futures]
    assert [[h.id for h in hits] for hits in got] == [[h.id for h in hits] for hits in blocking]
    assert [hits[0].item.meta["i"] for hits in got] == list(range(10))
    bad = alice.nowait().search("shared", "rivals", vectors[0], 3, now=1.0)
    with pytest.raises(HivememError):
        bad.result(timeout=10)
