"""Event streams of a client over a :class:`LocalTransport`: closed with the client, and
heard on a CURVE bus too (real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import asyncio
import threading

from hivemem.memory_bus.client import AsyncMemoryClient, LocalTransport, MemoryClient
from hivemem.memory_bus.item import NewItem

from .conftest import Bus


def finishes(call: object, seconds: float = 10.0) -> bool:
    """Whether ``call()`` returns within ``seconds`` (run in a thread, so a hang fails)."""
    done = threading.Event()
    threading.Thread(target=lambda: (call(), done.set()), daemon=True).start()  # type: ignore[operator]
    return done.wait(seconds)


def test_closing_a_local_client_with_an_event_stream_open_returns(bus: Bus) -> None:
    """LocalTransport did not track its SUB sockets, and close() terminated their
    context under them: it waited for the open stream's socket for ever."""
    token = bus.tokens["alice"]

    async def follow() -> str:
        transport = LocalTransport(bus.server)
        async with AsyncMemoryClient(transport=transport, agent="alice", token=token) as c:
            reading = c.events(["private/alice"])
            first = asyncio.ensure_future(reading.__anext__())
            while not first.done():  # written until the subscription hears it
                await c.write("private", "alice", NewItem("x"), now=0.0)
                await asyncio.wait([first], timeout=0.2)
            return str(first.result()["kind"])  # the stream is left open

    assert finishes(lambda: asyncio.run(follow()))

    sync = MemoryClient(transport=LocalTransport(bus.server), agent="alice", token=token)
    events = sync.events(["private/alice"], timeout=0.5)
    assert next(events, None) is None  # nothing written since: the iterator is open, waiting
    assert finishes(sync.close)
