"""Real servers on loopback, real sockets: linger 0 and receive timeouts, so bugs fail fast."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 32


@dataclass
class Bus:
    server: BusServer
    tokens: dict[str, str]

    def client(self, agent: str, **kw: object) -> MemoryClient:
        return MemoryClient(self.server.address, agent, self.tokens[agent], **kw)  # type: ignore[arg-type]


def make_server(**kw: object) -> tuple[BusServer, dict[str, str]]:
    store = MemoryStore(StoreConfig(dim=DIM, shared=TierConfig(capacity=1000)))
    server = BusServer(store, **kw)  # type: ignore[arg-type]
    tokens = {
        "alice": server.register("alice", ["team"]),
        "bob": server.register("bob", ["rivals"]),
        "__admin__": server.admin_token,
    }
    return server, tokens


@pytest.fixture
def bus() -> Iterator[Bus]:
    server, tokens = make_server()
    with server:
        yield Bus(server, tokens)


@pytest.fixture
def alice(bus: Bus) -> Iterator[MemoryClient]:
    client = bus.client("alice", timeout=5.0)
    yield client
    client.close()


@pytest.fixture
def dealer(bus: Bus) -> Iterator[zmq.Socket[bytes]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(bus.server.address)
    yield sock
    sock.close(linger=0)
    ctx.term()
