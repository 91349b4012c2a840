"""A read that recalls (``now``) and is sent again (a client's retry) counts one recall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.codec import vector_to_bytes
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import Reply, decode_reply, encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM

SECRET = b"r" * 32


def _server(journal: Journal | None = None) -> BusServer:
    store = MemoryStore(StoreConfig(dim=DIM, shared=TierConfig(capacity=1000)))
    server = BusServer(store, secret=SECRET, journal=journal)
    server.register("alice", ["team"])
    return server


def _ask(sock: zmq.Socket[Any], server: BusServer, req_id: int, op: str, **args: Any) -> Reply:
    sock.send_multipart(encode_request(req_id, 9, op, "alice", server.token("alice"), args))
    return decode_reply(sock.recv_multipart())


def _hits(server: BusServer, item_id: int) -> tuple[int, float]:
    with MemoryClient(server.address, "alice", server.token("alice"), timeout=5.0) as alice:
        item = alice.get("private", "alice", item_id)  # a look: no now, no recall
        return item.hits, item.accessed


def _dealer(server: BusServer) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(server.address)
    return ctx, sock


def test_a_resent_recall_is_answered_alike_and_counted_once() -> None:
    """Before: one get(now=5.0) retried during a stall took the item's hits from 0 to 4."""
    server = _server()
    with server:
        with MemoryClient(server.address, "alice", server.token("alice")) as alice:
            vector = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
            item_id = alice.write("private", "alice", NewItem("x", vector=vector), now=0.0).item_id
        ctx, sock = _dealer(server)
        try:
            where = {"tier": "private", "namespace": "alice"}
            first = _ask(sock, server, 1, "get", **where, item_id=item_id, now=5.0)
            assert first.ok and first.result["hits"] == 1
            for _ in range(3):  # the same request again: the same answer, no recall
                assert _ask(sock, server, 1, "get", **where, item_id=item_id, now=5.0) == first
            assert _hits(server, item_id) == (1, 5.0)
            query = {**where, "vector": vector_to_bytes(vector), "k": 1, "now": 6.0}
            found = _ask(sock, server, 2, "search", **query)
            assert found.ok and _ask(sock, server, 2, "search", **query) == found
            assert _hits(server, item_id) == (2, 6.0)
            # Another read under a used key (not a retry) and a new request do recall.
            assert _ask(sock, server, 1, "get", **where, item_id=item_id, now=7.0).ok
            assert _ask(sock, server, 3, "get", **where, item_id=item_id, now=8.0).ok
            assert _hits(server, item_id) == (4, 8.0)
        finally:
            sock.close(linger=0)
            ctx.term()


def test_a_resent_recall_is_journaled_once(tmp_path: Path) -> None:
    with _server(Journal(tmp_path, "no")) as server:
        with MemoryClient(server.address, "alice", server.token("alice")) as alice:
            item_id = alice.write("private", "alice", NewItem("x"), now=0.0).item_id
        ctx, sock = _dealer(server)
        try:
            args = {"tier": "private", "namespace": "alice", "item_id": item_id, "now": 5.0}
            for _ in range(3):
                assert _ask(sock, server, 1, "get", **args).ok
        finally:
            sock.close(linger=0)
            ctx.term()
    with _server(Journal(tmp_path, "no")) as server:
        assert _hits(server, item_id) == (1, 5.0)
