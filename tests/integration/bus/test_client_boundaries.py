"""What a client refuses, and how, at its own boundary: event addresses ZeroMQ cannot
use, and renumbering its requests from a handle, out of range or with requests in flight
(real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import asyncio

import pytest
from hivemem.memory_bus.client import AsyncMemoryClient
from hivemem.memory_bus.errors import HivememError

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
