"""Real servers on loopback, real sockets: linger 0 and receive timeouts, so bugs fail fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import GraphConfig, StoreConfig, TierConfig
from hivemem.memory_bus.protocol import Reply, decode_reply
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 32


@dataclass
class Bus:
    server: BusServer
    tokens: dict[str, str]

    def client(self, agent: str, **kw: object) -> MemoryClient:
        return MemoryClient(self.server.address, agent, self.tokens[agent], **kw)  # type: ignore[arg-type]


def make_server(register: bool = True, **kw: object) -> tuple[BusServer, dict[str, str]]:
    """A server (not started) and the tokens of alice, bob and the admin. Without
    ``register`` alice and bob are not registered (their private namespaces are theirs
    all the same), so that a journal holds nothing but what the test writes."""
    store = MemoryStore(StoreConfig(dim=DIM, shared=TierConfig(capacity=1000)))
    server = BusServer(store, **kw)  # type: ignore[arg-type]
    groups = {"alice": ["team"], "bob": ["rivals"]}
    tokens = {
        agent: server.register(agent, group) if register else server.token(agent)
        for agent, group in groups.items()
    }
    return server, {**tokens, "__admin__": server.admin_token}


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


def send_once(address: str, frames: list[bytes], timeout_ms: int = 10_000) -> Reply:
    """One request on a socket of its own (as a client retrying after a reconnect), its
    reply decoded."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    try:
        sock.connect(address)
        sock.send_multipart(frames)
        return decode_reply(sock.recv_multipart())
    finally:
        sock.close(linger=0)
        ctx.term()


SUBSCRIBED_WITHIN_S = 10.0
"""How long a SUB socket may take to connect and have its subscriptions granted: ZeroMQ
connects in the background, and a loaded machine (CI) has taken more than a second."""


def subscriptions_held(server: BusServer) -> float:
    """The event subscriptions ``server`` has granted and holds now."""
    return (
        server.inspect(
            lambda _: server.metrics.registry.get_sample_value("hivemem_bus_event_subscriptions")
        )
        or 0.0
    )


def _short_of(server: BusServer, count: int, deadline: float) -> bool:
    held = subscriptions_held(server)
    if held >= count:
        return False
    if time.monotonic() > deadline:
        raise AssertionError(f"{held:g} event subscriptions granted, not {count}, in time")
    return True


def wait_subscribed(server: BusServer, count: int) -> None:
    """Wait until ``server`` holds ``count`` event subscriptions (one per subscriber and
    topic): events written before a SUB's subscription reaches the server never reach it."""
    deadline = time.monotonic() + SUBSCRIBED_WITHIN_S
    while _short_of(server, count, deadline):
        time.sleep(0.02)


async def subscribed(server: BusServer, count: int) -> None:
    """:func:`wait_subscribed` for a coroutine, whose loop must run on meanwhile (the
    streams' ``subscribe`` requests and sockets are made there)."""
    deadline = time.monotonic() + SUBSCRIBED_WITHIN_S
    while _short_of(server, count, deadline):
        await asyncio.sleep(0.02)


def unit_vector(seed: int, dim: int) -> np.ndarray:
    """A seeded random float32 vector of norm 1."""
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@contextmanager
def graph_client(graph: GraphConfig, dim: int) -> Iterator[MemoryClient]:
    """A bus whose graph tier is ``graph``, and alice (of group ``team``) on it."""
    server = BusServer(MemoryStore(StoreConfig(dim=dim, graph=graph)))
    token = server.register("alice", ["team"])
    with server, MemoryClient(server.address, "alice", token, timeout=5.0) as client:
        yield client
