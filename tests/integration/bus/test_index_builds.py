"""A namespace's HNSW is built while the bus keeps answering every client."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import IndexConfig, StoreConfig, TierConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.builds import builder_held

from .conftest import DIM
from .test_metrics import free_port

INDEX = IndexConfig(approx_threshold=1_500, build_batch=1_024, hnsw_ef_search=4_096)


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def kind_of(server: BusServer, namespace: str) -> str:
    return server.inspect(lambda store: store.private.namespaces[namespace].index.kind)


def test_the_bus_answers_while_a_namespace_builds_its_index() -> None:
    store = MemoryStore(StoreConfig(dim=DIM, private=TierConfig(index=INDEX)))
    server = BusServer(store)
    token = server.register("alice", [])
    with server:
        port = free_port()
        server.metrics.serve(port)
        alice = MemoryClient(server.address, "alice", token, timeout=5.0)
        vecs = unit(1_600, 1)
        ids: list[int] = []
        try:
            with builder_held():
                for start in range(0, 1_600, 200):  # crosses approx_threshold at 1,500
                    entries = [
                        ("alice", NewItem(f"fact {i}", vector=vecs[i]))
                        for i in range(start, start + 200)
                    ]
                    ids += [r.item_id for r in alice.write_many("private", entries, now=0.0)]
                assert alice.stats()["private"]["index_builds"] == 1
                assert kind_of(server, "alice") == "flat"
                hits = alice.search_many(
                    "private", [("alice", vecs[i], 1) for i in range(0, 1_600, 97)], now=1.0
                )
                assert [h[0].id for h in hits] == ids[::97]  # searched exactly meanwhile
                # The gauges refresh once a second, or up to every 5 s where a refresh
                # is slow (a loaded machine): the build is held, so wait for a refresh.
                url = f"http://127.0.0.1:{port}/metrics"
                building = 'hivemem_bus_index_builds{tier="private"} 1.0'
                deadline, text = time.monotonic() + 20, ""
                while building not in text and time.monotonic() < deadline:
                    time.sleep(0.2)
                    text = urllib.request.urlopen(url, timeout=5).read().decode()
                assert building in text
            deadline = time.monotonic() + 30
            while alice.stats()["private"]["index_builds"] and time.monotonic() < deadline:
                alice.search("private", "alice", vecs[0], k=1, now=2.0)  # installs when done
            assert kind_of(server, "alice") == "hnsw"
            hits = alice.search_many(
                "private", [("alice", vecs[i], 1) for i in range(0, 1_600, 97)], now=3.0
            )
            assert [h[0].id for h in hits] == ids[::97]
        finally:
            alice.close()
