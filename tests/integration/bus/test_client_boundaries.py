"""What a client refuses, and how, at its own boundary: event addresses ZeroMQ cannot
use, and renumbering its requests from a handle, out of range or with requests in flight
(real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
from hivemem.memory_bus.client import AsyncMemoryClient, LocalTransport, MemoryClient
from hivemem.memory_bus.errors import HivememError, InvalidInputError
from hivemem.memory_bus.item import NewItem

from .conftest import Bus


@pytest.mark.parametrize("pub_address", ["bogus://x", "tcp://127.0.0.1"])
def test_an_event_address_zeromq_cannot_use_raises_the_projects_error(
    bus: Bus, pub_address: str
) -> None:
    """The SUB's connect ran outside the translated path: a raw ZMQError came out."""

    async def first() -> object:
        async with AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"]) as c:
            stream = c.events(["private/alice"], pub_address=pub_address)
            try:
                return await asyncio.wait_for(stream.__anext__(), 5)
            finally:
                await stream.aclose()

    with pytest.raises(HivememError, match="event socket") as caught:
        asyncio.run(first())
    assert type(caught.value).__module__.startswith("hivemem")


def test_a_handle_cannot_renumber_its_owners_connection(bus: Bus) -> None:
    """A handle lent to bob's code renumbered alice's connection: her next writes reused
    old ids and were answered from the bus's memory of older writes, never applied."""
    with bus.client("alice", timeout=5.0) as owner:
        owner.write("private", "alice", NewItem("first"), now=0.0)
        bob = owner.as_agent("bob", bus.tokens["bob"])
        with pytest.raises(HivememError, match="handle"):
            bob.number_requests_from(1)
        third = owner.write("private", "alice", NewItem("third"), now=2.0)
        assert owner.get("private", "alice", third.item_id).text == "third"

    async def on_a_handle() -> None:
        async with AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"]) as c:
            c.as_agent("bob", bus.tokens["bob"]).number_requests_from(1)

    with pytest.raises(HivememError, match="handle"):
        asyncio.run(on_a_handle())


@pytest.mark.parametrize("start", [-5, 2**64, "x", 1.5, True])
def test_a_request_id_the_wire_cannot_carry_is_refused_by_name(bus: Bus, start: Any) -> None:
    """-5 was taken, and after 2**64 every call failed with "invalid args: cannot be sent"."""
    for client in (
        bus.client("alice", timeout=5.0),
        MemoryClient(
            transport=LocalTransport(bus.server), agent="alice", token=bus.tokens["alice"]
        ),
    ):
        with client:
            with pytest.raises(InvalidInputError, match="request ids") as caught:
                client.number_requests_from(start)
            assert caught.value.field == "start"
            assert client.ping()["agent"] == "alice"  # the numbering is as it was


def test_the_largest_id_the_wire_carries_is_taken_and_the_next_wraps_around(bus: Bus) -> None:
    """After 2**64 - 1 the ids start again at 1; the request after it failed with
    "invalid args: cannot be sent" (an id msgpack cannot carry)."""
    with bus.client("alice", timeout=5.0) as client:
        client.number_requests_from(2**64 - 1)
        assert client.ping()["agent"] == "alice"
        written = client.write("private", "alice", NewItem("after the wrap"), now=1.0)
        assert client.get("private", "alice", written.item_id).text == "after the wrap"


def test_renumbering_with_requests_in_flight_is_refused_by_the_async_client() -> None:
    """A renumbered id equal to one in flight overwrote its waiter: one of the two
    requests was left without its reply."""
    with socket.socket() as nobody:  # a port bound, never listening: no reply ever comes
        nobody.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{nobody.getsockname()[1]}"

        async def run() -> None:
            async with AsyncMemoryClient(address, "alice", "t", timeout=None) as c:
                waiting = asyncio.ensure_future(c.ping())
                await asyncio.sleep(0)  # sent, in flight
                try:
                    with pytest.raises(HivememError, match="in flight"):
                        c.number_requests_from(1)
                finally:
                    waiting.cancel()
                    await asyncio.gather(waiting, return_exceptions=True)
                c.number_requests_from(1)  # none in flight now

        asyncio.run(run())


def test_the_sync_client_renumbers_once_its_nowait_requests_are_answered(bus: Bus) -> None:
    """Its ``nowait`` requests are in flight on the async core: renumbering waits for
    them, as a blocking call does, instead of reusing an id one of them holds."""
    stalled, release = threading.Event(), threading.Event()

    def stall(_store: object) -> None:
        stalled.set()
        release.wait(10)

    staller = threading.Thread(target=bus.server.inspect, args=(stall,))
    staller.start()
    try:
        assert stalled.wait(10)
        with bus.client("alice", timeout=10.0) as client:
            written = client.nowait().write("private", "alice", NewItem("x"), now=0.0)
            threading.Timer(0.3, release.set).start()
            client.number_requests_from(1)
            assert written.done()
            assert client.get("private", "alice", written.result().item_id).text == "x"
    finally:
        release.set()
        staller.join()
