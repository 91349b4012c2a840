"""The clients over LocalTransport: a server of this process called directly, no socket.

Every answer must be the one the socket gives (``hivemem.memory_bus.testing.check_transport``):
the same ops, the same refusals, the same idempotent retries (events: ``test_events.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.client import (
    AsyncMemoryClient,
    LocalTransport,
    MemoryClient,
)
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import (
    HivememError,
    InvalidInputError,
)
from hivemem.memory_bus.interfaces import SyncTransport, Transport
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import ADMIN_AGENT, ProtocolError
from hivemem.memory_bus.server import BusServer, serving_at
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing import ContractFailure, check_transport
from hivemem.memory_bus.transport import AsyncTransport

from .conftest import DIM, Bus, make_server

QUIET_S = 0.7


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def local_client(bus: Bus, agent: str, client_id: int | None = None) -> MemoryClient:
    transport = LocalTransport.at(bus.server.address, client_id)
    return MemoryClient(agent=agent, token=bus.tokens[agent], transport=transport)


def test_every_answer_is_the_one_the_socket_gives() -> None:
    check_transport(LocalTransport)


class AsAdmin(LocalTransport):
    """A transport that gets it wrong: every request goes out as the administrator."""

    def call_now(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        return super().call_now(op, ADMIN_AGENT, self.server.admin_token, args)


def test_the_check_catches_a_transport_that_answers_otherwise() -> None:
    with pytest.raises(ContractFailure, match="over the transport"):
        check_transport(AsAdmin)


def test_refusals_and_bad_tokens_raise_as_over_the_socket(bus: Bus) -> None:
    client = MemoryClient(
        agent="alice", token="not-a-token", transport=LocalTransport(bus.server, client_id=7)
    )
    with pytest.raises(ProtocolError, match="token"):
        client.write("private", "alice", NewItem("x"), now=0.0)
    client.close()


def test_a_retried_write_with_the_same_id_is_answered_from_memory(bus: Bus) -> None:
    """A process that replays its requests after a crash numbers them as before."""
    ids = []
    for _attempt in range(2):
        client = local_client(bus, "alice", client_id=42)
        client.number_requests_from(1_000)
        ids.append(
            client.write("private", "alice", NewItem("once", vector=vec(3)), now=0.0).item_id
        )
        client.close()
    assert ids[0] == ids[1]
    reader = bus.client("alice", timeout=5.0)
    hits = reader.search("private", "alice", vec(3), k=10, now=1.0)
    assert [h.item.text for h in hits] == ["once"]
    reader.close()


def test_the_transports_keep_the_protocols(bus: Bus) -> None:
    local = LocalTransport(bus.server)
    assert isinstance(local, Transport) and isinstance(local.blocking(), SyncTransport)
    assert local.blocking().immediate
    sockets = AsyncTransport(bus.server.address, 1.0, 0, None)
    blocking = sockets.blocking()
    assert isinstance(sockets, Transport) and isinstance(blocking, SyncTransport)
    assert not blocking.immediate
    blocking.close()
    sockets.close()


def test_the_async_client_over_a_local_transport(bus: Bus) -> None:
    async def run() -> list[str]:
        client = AsyncMemoryClient(
            agent="alice", token=bus.tokens["alice"], transport=LocalTransport(bus.server)
        )
        results = await asyncio.gather(
            *(
                client.write("private", "alice", NewItem(f"a{i}", vector=vec(i)), now=0.0)
                for i in range(5)
            )
        )
        hits = await client.search("private", "alice", vec(4), k=1, now=1.0)
        client.close()
        assert len({r.item_id for r in results}) == 5
        return [h.item.text for h in hits]

    assert asyncio.run(run()) == ["a4"]


def test_no_server_no_transport_and_a_stopped_server_refuses() -> None:
    server, tokens = make_server()
    with pytest.raises(HivememError, match="no bus server of this process"):
        LocalTransport.at("tcp://127.0.0.1:1")
    server.start()
    address = server.address
    assert serving_at(address) is server
    client = MemoryClient(agent="alice", token=tokens["alice"], transport=LocalTransport(server))
    client.ping()
    server.stop()
    assert serving_at(address) is None
    with pytest.raises(HivememError, match="not serving"):
        client.ping()
    client.close()
    with pytest.raises(ValueError, match="no bus address"):
        MemoryClient()
    with pytest.raises(ValueError, match="address or a transport"):
        MemoryClient(address, transport=LocalTransport(server))


def test_snapshots_of_local_writes_are_forked_by_the_owner_thread(tmp_path: Path) -> None:
    """A write through handle() that makes a snapshot due leaves it to the owner thread:
    a writer forked by the calling thread would die with it (PR_SET_PDEATHSIG), and here
    every caller is a thread that ends right after its write."""
    store = MemoryStore(StoreConfig(dim=DIM))
    server = BusServer(store, journal=Journal(tmp_path), snapshot_every=5)
    token = server.register("alice")
    server.start()
    written = []

    def one_write(i: int) -> None:
        client = MemoryClient(agent="alice", token=token, transport=LocalTransport(server))
        written.append(client.write("private", "alice", NewItem(f"fact {i}"), now=0.0).item_id)
        client.close()

    snapshots = []
    for i in range(10):
        caller = threading.Thread(target=one_write, args=(i,))
        caller.start()
        caller.join()
        if i % 5 == 4:  # a snapshot is due: it completes, though its caller is gone
            deadline = time.monotonic() + 20
            while server.snapshots < len(snapshots) + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            snapshots.append(server.snapshots)
    server.stop()
    assert snapshots == [1, 2]
    again = BusServer(MemoryStore(StoreConfig(dim=DIM)), journal=Journal(tmp_path))
    token = again.register("alice")
    with again:
        client = MemoryClient(agent="alice", token=token, transport=LocalTransport(again))
        assert client.stats()["private"]["items"] == len(written) == 10
        client.close()


def test_the_async_client_wants_an_address_or_a_transport() -> None:
    with pytest.raises(ValueError, match="address or a transport"):
        AsyncMemoryClient()


@pytest.mark.parametrize("client_id", [-1, 2**63, "7", 1.0, True])
def test_a_client_id_out_of_range_is_refused_by_either_transport(bus: Bus, client_id: int) -> None:
    """Refused by name: "7" was a raw TypeError, and 1.0 or True were taken."""
    for make in (
        lambda: LocalTransport(bus.server, client_id),
        lambda: AsyncMemoryClient(bus.server.address, client_id=client_id),
    ):
        with pytest.raises(InvalidInputError, match=r"2\*\*63") as caught:
            make()
        assert caught.value.field == "client_id"


def test_the_gauges_are_refreshed_between_requests_handed_over_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner thread walks every namespace for the gauges while hosts in the process add
    namespaces through ``handle()``: the walk must wait for the request, or it raises, and
    the owner thread died (and its server hung when stopped)."""
    import hivemem.memory_bus.owner_loop as owner_loop

    monkeypatch.setattr(owner_loop, "GAUGE_PERIOD_S", 0.0)  # a walk at every wake-up
    monkeypatch.setattr(owner_loop, "POLL_MS", 1)
    server = BusServer(MemoryStore(StoreConfig(dim=DIM), embed=False))
    agents = [f"a{i}" for i in range(6_000)]
    tokens = {agent: server.register(agent) for agent in agents}
    server.start()
    stopped = threading.Thread(target=server.stop)
    try:
        client = MemoryClient(transport=LocalTransport(server))
        for i, agent in enumerate(agents):  # a new namespace each
            client.as_agent(agent, tokens[agent]).write(
                "private", agent, NewItem("x", vec(i)), now=0.0
            )
        assert server.serving  # the owner thread is alive
        assert server.inspect(lambda store: store.stats()["private"]["namespaces"]) == 6_000
    finally:
        stopped.start()
        stopped.join(timeout=30)
    assert not stopped.is_alive(), "stopping the server hung"
