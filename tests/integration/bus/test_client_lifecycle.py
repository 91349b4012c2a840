"""Clients closed with work in flight, used from other loops and threads, and a timeout
among pipelined requests (real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.transport import BusTimeoutError

from .conftest import Bus


def finishes(call: object, seconds: float = 10.0) -> bool:
    """Whether ``call()`` returns within ``seconds`` (run in a thread, so a hang fails)."""
    done = threading.Event()
    threading.Thread(target=lambda: (call(), done.set()), daemon=True).start()  # type: ignore[operator]
    return done.wait(seconds)


def test_closing_with_an_event_stream_open_returns(bus: Bus) -> None:
    """close() terminated the context while the stream's SUB was open, and waited for it
    for ever (an ``async with`` left by a break out of its events never returned)."""

    async def follow() -> str:
        async with AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"]) as c:
            async for event in c.events(["private/alice"]):
                return str(event["kind"])
            return ""

    async def run() -> str:
        reading = asyncio.ensure_future(follow())
        await asyncio.sleep(0.5)  # subscribed
        with bus.client("alice") as writer:
            writer.write("private", "alice", NewItem("x"), now=0.0)
        return await reading

    assert finishes(lambda: asyncio.run(run()))
    sync = bus.client("alice")
    events = sync.events(["private/alice"], timeout=0.5)
    assert next(events, None) is None  # nothing written since: the iterator is open, waiting
    assert finishes(sync.close)
    with pytest.raises(HivememError, match="closed"):
        sync.ping()


def test_a_timeout_keeps_the_replies_to_the_other_requests(bus: Bus) -> None:
    """A's timeout replaced the socket that B's reply, sent in time, was coming back on."""

    async def run() -> tuple[str, str]:
        c = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"], timeout=1.0, retries=0)  # fmt: skip
        try:
            await c.ping()
            pause = threading.Thread(target=lambda: bus.server.inspect(lambda _: time.sleep(1.3)))
            pause.start()
            await asyncio.sleep(0.05)
            a = asyncio.ensure_future(c.write("private", "alice", NewItem("A"), now=0.0))
            await asyncio.sleep(0.55)
            b = asyncio.ensure_future(c.write("private", "alice", NewItem("B"), now=0.0))
            outcomes = await asyncio.gather(a, b, return_exceptions=True)
            pause.join()
            return type(outcomes[0]).__name__, type(outcomes[1]).__name__
        finally:
            c.close()

    assert asyncio.run(run()) == (BusTimeoutError.__name__, "WriteResult")


def test_an_async_client_refuses_a_second_event_loop(bus: Bus) -> None:
    """Its reader task lives in the loop it first ran in: in another, replies were lost
    and every call waited out its timeout."""

    async def run() -> str:
        client = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"], timeout=1.0)
        try:
            await client.ping()
            elsewhere: list[BaseException] = []

            def other_loop() -> None:
                try:
                    asyncio.run(client.ping())
                except HivememError as exc:
                    elsewhere.append(exc)

            thread = threading.Thread(target=other_loop)
            thread.start()
            await asyncio.to_thread(thread.join)
            assert [str(e) for e in elsewhere] and "one per loop" in str(elsewhere[0])
            return str((await client.ping())["agent"])  # still fine in its own loop
        finally:
            client.close()

    assert asyncio.run(run()) == "alice"


def test_a_closed_client_ends_its_requests_and_refuses_more(bus: Bus) -> None:
    client = bus.client("alice", timeout=30.0)
    pause = threading.Thread(target=lambda: bus.server.inspect(lambda _: time.sleep(1.0)))
    pause.start()
    time.sleep(0.05)
    pending = client.nowait().write("private", "alice", NewItem("late"), now=0.0)
    assert finishes(client.close)
    with pytest.raises(HivememError, match="closed"):
        pending.result(timeout=5)
    with pytest.raises(HivememError, match="closed"):
        client.nowait().ping()
    pause.join()


def test_close_from_two_threads_at_once_closes_once() -> None:
    from .conftest import make_server

    server, tokens = make_server()
    with server:
        clients = [MemoryClient(server.address, "alice", tokens["alice"]) for _ in range(10)]
        for c in clients:
            c.ping()
        errors: list[BaseException] = []

        def close_all() -> None:
            for c in clients:
                try:
                    c.close()
                except BaseException as exc:  # what close() must not raise
                    errors.append(exc)

        threads = [threading.Thread(target=close_all) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors and not any(t.is_alive() for t in threads)


def test_a_client_that_fails_to_start_leaves_no_thread() -> None:
    before = sum(t.name == "hivemem-client" for t in threading.enumerate())
    for _ in range(3):
        with pytest.raises((ValueError, HivememError)):
            MemoryClient("tcp://127.0.0.1:1", "a", "t", client_id=-1)
    time.sleep(0.1)
    assert sum(t.name == "hivemem-client" for t in threading.enumerate()) == before
