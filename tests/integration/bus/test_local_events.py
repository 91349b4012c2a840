"""Event streams of a client over a :class:`LocalTransport`: closed with the client, and
heard on a CURVE bus too (real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import zmq.auth
from hivemem.memory_bus.client import AsyncMemoryClient, LocalTransport, MemoryClient
from hivemem.memory_bus.curve import CurveConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.sockets import curve_keys

from .conftest import Bus, make_server


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


def test_a_local_client_on_a_curve_bus_hears_events_with_keys_and_is_told_without(
    tmp_path: Path,
) -> None:
    """Its SUB subscribed with no CURVE keys, never got through the bus's handshake, and
    heard nothing, for ever, without a word."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, _ = zmq.auth.create_certificates(tmp_path, "server")
    _, client_secret = zmq.auth.create_certificates(allowed, "client")
    server, tokens = make_server(curve=CurveConfig(tmp_path / "server.key_secret", allowed))
    with server:
        plain = MemoryClient(transport=LocalTransport(server), agent="alice", token=tokens["alice"])
        with plain, pytest.raises(HivememError, match="CURVE"):
            next(plain.events(["private/alice"], timeout=5.0))

        keyed = LocalTransport(server, curve=curve_keys(client_secret, server_public))
        with MemoryClient(transport=keyed, agent="alice", token=tokens["alice"]) as client:
            heard: list[str] = []

            def follow() -> None:
                for event in client.events(["private/alice"], timeout=10):
                    heard.append(event["kind"])
                    if event["kind"] == "add":  # (a gap may come first: writes before it)
                        return

            reader = threading.Thread(target=follow)
            reader.start()
            while (
                reader.is_alive() and "add" not in heard
            ):  # written until the subscription hears it
                client.write("private", "alice", NewItem("x"), now=0.0)
                reader.join(timeout=0.2)
            reader.join(timeout=30)
            assert "add" in heard
