"""Requests in flight across a bus that is away for longer than the client's timeout, and
a flood of them through a stall: each is resent once per reconnect, in the order it was
first sent, and never applied twice (real server, real sockets; from an audit of the
clients)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hivemem.memory_bus.auth import new_secret
from hivemem.memory_bus.client import AsyncMemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.server_process import free_port

from .conftest import DIM, make_server


def test_requests_in_flight_across_a_restart_are_resent_once_in_order(tmp_path: Path) -> None:
    """The request that timed out first was resent last, and every other one twice (by
    the reconnect, then by its own retry): updates of expected_version 2 and 3 reached
    the bus before 1 and were refused to the caller, then applied by their second copy;
    writes A, B, C, D got ids out of order."""
    port, secret = free_port(), new_secret()

    def start() -> BusServer:
        server, _ = make_server(
            port=port, secret=secret, journal=Journal(tmp_path, "no"), fork_snapshots=False
        )
        return server.start()

    async def run() -> None:
        server = start()
        token = server.token("alice")
        address = f"tcp://127.0.0.1:{port}"
        async with AsyncMemoryClient(address, "alice", token, timeout=0.5, retries=40) as c:
            base = await c.write("private", "alice", NewItem("v1"), now=0.0)
            server.stop()  # the bus goes away ...
            writes = [
                asyncio.ensure_future(c.write("private", "alice", NewItem(name), now=1.0))
                for name in "ABCD"
            ]
            updates = [
                asyncio.ensure_future(
                    c.update(
                        "private",
                        "alice",
                        base.item_id,
                        expected_version=v,
                        now=2.0,
                        text=f"v{v + 1}",
                    )
                )
                for v in (1, 2, 3)
            ]
            transport = c._transport
            while transport._generation < 3:  # ... for longer than two timeouts
                await asyncio.sleep(0.05)
            server = start()
            try:
                ids = [w.item_id for w in await asyncio.gather(*writes)]
                versions = [u.version for u in await asyncio.gather(*updates)]
                assert ids == sorted(ids)
                assert versions == [2, 3, 4]
                item = await c.get("private", "alice", base.item_id)
                assert (item.text, item.version) == ("v4", 4)
                history = await c.history("private", "alice", base.item_id)
                assert [h["version"] for h in history] == [1, 2, 3, 4]
            finally:
                server.stop()

    asyncio.run(run())


def test_a_flood_through_a_stall_is_held_below_the_bus_memory_of_replies() -> None:
    """One agent's writes pipelined through a stall (here the client's: its event loop
    busy while the bus applies them) all timed out, their replies were lost with the
    socket replaced, and all were resent; the bus remembers an agent's last
    ``dedup_size // 10`` replies only, and applied the resent writes it had forgotten a
    second time. The client's cap on requests in flight (4, under a window of 10) keeps
    what the bus applies before a resend within the window."""
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)), dedup_size=100)
    token = server.register("alice", ["team"])
    writes, cap, timeout = 120, 4, 0.3

    def stored() -> int:
        return int(server.inspect(lambda store: store.stats()["private"]["items"]))

    async def run() -> None:
        async with AsyncMemoryClient(
            server.address, "alice", token, timeout=timeout, retries=50, max_in_flight=cap
        ) as c:
            await c.ping()  # connected
            sent = asyncio.gather(
                *(
                    c.write("private", "alice", NewItem(f"w{i}"), now=float(i))
                    for i in range(writes)
                )
            )
            while len(c._transport._sent_on) < min(writes, cap):
                await asyncio.sleep(0)  # the first ones sent
            # The loop stalls (its replies unread) until the bus applied what was sent and
            # the requests' timeouts passed: they all time out at once when it goes on.
            until = time.monotonic() + 2 * timeout
            while stored() < min(writes, cap) or time.monotonic() < until:
                time.sleep(0.01)
            assert len(await sent) == writes

    with server:
        asyncio.run(run())
        assert stored() == writes


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_a_cap_on_requests_in_flight_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="max_in_flight") as caught:
        AsyncMemoryClient("tcp://127.0.0.1:1", max_in_flight=bad)  # type: ignore[arg-type]
    assert caught.value.field == "max_in_flight"
