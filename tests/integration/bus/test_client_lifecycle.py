"""Clients closed with work in flight, used from other loops and threads, and a timeout
among pipelined requests (real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.requests import BusTimeoutError
from hivemem.memory_bus.server import BusServer

from .conftest import Bus, subscribed, wait_subscribed


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
        await subscribed(bus.server, 1)  # else the write comes first, and nothing after it
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


@contextmanager
def held(server: BusServer) -> Iterator[threading.Event]:
    """``server`` held between two requests (it answers none) from when this returns
    until the event it gives is set, or the block ends. A thread started to do it may
    take its time to start (a loaded machine), so it is waited for."""
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=lambda: server.inspect(lambda _: (holding.set(), release.wait(30)))
    )
    holder.start()
    assert holding.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join()


def test_a_timeout_keeps_the_replies_to_the_other_requests(bus: Bus) -> None:
    """A's timeout replaced the socket that B's reply, sent in time, was coming back on."""

    async def run() -> tuple[str, str]:
        c = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"], timeout=2.0, retries=0)  # fmt: skip
        try:
            await c.ping()
            with held(bus.server) as release:
                a = asyncio.ensure_future(c.write("private", "alice", NewItem("A"), now=0.0))
                await asyncio.sleep(1.0)
                assert not a.done()  # B goes out while A waits; A's timeout comes first
                b = asyncio.ensure_future(c.write("private", "alice", NewItem("B"), now=0.0))
                (outcome_a,) = await asyncio.gather(a, return_exceptions=True)
                release.set()  # then the bus answers both, within B's time
                (outcome_b,) = await asyncio.gather(b, return_exceptions=True)
            return type(outcome_a).__name__, type(outcome_b).__name__
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
    with held(bus.server):  # the write is not answered before the close
        pending = client.nowait().write("private", "alice", NewItem("late"), now=0.0)
        assert finishes(client.close)
        with pytest.raises(HivememError, match="closed"):
            pending.result(timeout=5)
        with pytest.raises(HivememError, match="closed"):
            client.nowait().ping()


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


def test_a_blocking_call_in_a_done_callback_is_refused_not_deadlocked(bus: Bus) -> None:
    """The callback runs on the loop thread: its call waited there for the second write,
    which that very thread had to complete, and the client hung for good."""
    client = bus.client("alice", timeout=5.0)
    client.ping()
    got: list[BaseException] = []

    def blocking_read(first: Any) -> None:
        try:
            client.get("private", "alice", first.result().item_id)
        except HivememError as exc:
            got.append(exc)

    with held(bus.server):  # answered after the callback is attached: the loop thread runs it
        first = client.nowait().write("private", "alice", NewItem("one"), now=0.0)
        first.add_done_callback(blocking_read)
        second = client.nowait().write("private", "alice", NewItem("two"), now=0.0)
    try:
        assert second.result(timeout=5).item_id != first.result(timeout=5).item_id
        assert len(got) == 1 and "another thread" in str(got[0])
        assert client.get("private", "alice", second.result().item_id).text == "two"
    finally:
        assert finishes(client.close)


def test_close_in_a_done_callback_closes_the_client(bus: Bus) -> None:
    """close() on the loop thread waited for the loop it was holding."""
    client = bus.client("alice", timeout=5.0)
    closed = threading.Event()
    with held(bus.server):  # answered after the callback is attached: the loop thread runs it
        done = client.nowait().ping()
        done.add_done_callback(lambda _: (client.close(), closed.set()))
    assert closed.wait(5), "close() returned in the callback"
    client._thread.join(5)
    assert not client._thread.is_alive()
    with pytest.raises(HivememError, match="closed"):
        client.ping()
    assert finishes(client.close)  # a second close, from another thread, does nothing


def test_an_events_iterator_collected_on_the_loop_thread_does_not_stop_the_loop(
    bus: Bus,
) -> None:
    """Its cleanup waited on the loop for the stream's closing, from the loop itself."""
    client = bus.client("alice", timeout=5.0)
    events = client.events(["private/alice"], timeout=5.0)
    first = threading.Thread(target=lambda: next(events))  # the stream is open, then waits
    first.start()
    wait_subscribed(bus.server, 1)
    client.write("private", "alice", NewItem("x"), now=0.0)
    first.join(5)
    loop_ran = client._loop.call_soon_threadsafe
    cleanup = concurrent.futures.Future[None]()
    loop_ran(lambda: (events.close(), cleanup.set_result(None)))  # as a collection would
    try:
        cleanup.result(timeout=5)
        assert client.nowait().ping().result(timeout=5)["agent"] == "alice"
    finally:
        assert finishes(client.close)


def test_close_ends_every_request_with_client_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    """Past the send queue's 1,000 messages, a request was cancelled at its send and
    gave a bare CancelledError; its future then logged "exception never retrieved"."""
    with socket.socket() as probe:  # a port nobody listens on: no request is answered
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"

    async def run() -> list[BaseException]:
        client = AsyncMemoryClient(address, "alice", "t", timeout=30.0)
        writes = [
            asyncio.ensure_future(client.write("private", "alice", NewItem(f"{i}"), now=0.0))
            for i in range(1200)
        ]
        await asyncio.sleep(0.3)
        client.close()
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert len(outcomes) == 1200
    assert all(isinstance(o, HivememError) and "closed" in str(o) for o in outcomes)
    del outcomes  # their tracebacks hold the requests' futures
    gc.collect()  # a future whose exception nobody took logs it as it is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_close_ends_an_events_iteration_with_client_is_closed(bus: Bus) -> None:
    """The thread iterating events() got a CancelledError (or nothing, and hung)."""
    client = bus.client("alice")
    got: list[BaseException] = []

    def follow() -> None:
        try:
            for _ in client.events(["private/alice"]):
                pass
        except BaseException as exc:  # what the iteration ends with is the point
            got.append(exc)

    reader = threading.Thread(target=follow)
    reader.start()
    wait_subscribed(bus.server, 1)  # the iteration waits on its socket
    assert finishes(client.close)
    reader.join(5)
    assert not reader.is_alive()
    assert len(got) == 1 and type(got[0]) is HivememError and "closed" in str(got[0])


def test_closing_a_handle_leaves_the_client_open(bus: Bus) -> None:
    """Leaving ``with client.as_agent(...)`` closed the client itself, for every agent."""
    client = bus.client("alice", timeout=5.0)
    try:
        with client.as_agent("bob", bus.tokens["bob"]) as bob:
            assert bob.ping()["agent"] == "bob"
        assert client.ping()["agent"] == "alice"
        assert bob.ping()["agent"] == "bob"  # the handle too: it never owned the connection

        async def run() -> str:
            async with AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"]) as c:
                async with c.as_agent("bob", bus.tokens["bob"]):
                    pass
                return str((await c.ping())["agent"])

        assert asyncio.run(run()) == "alice"
    finally:
        client.close()
    with pytest.raises(HivememError, match="closed"):
        bob.ping()  # the client's close ends its handles


def test_a_handle_holds_its_own_credentials_only(bus: Bus) -> None:
    """A sync handle kept the parent's (the admin's) core, token and all."""
    admin = bus.client("__admin__", timeout=5.0)
    try:
        alice = admin.as_agent("alice", bus.tokens["alice"])
        assert alice.ping()["agent"] == "alice"
        assert (alice._core.agent, alice._core.token) == ("alice", bus.tokens["alice"])
    finally:
        admin.close()


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_close_ends_a_blocking_call_waiting_on_a_silent_bus(timeout: float | None) -> None:
    """A call waiting for a reply held the transport's lock, which close() waited for:
    with ``timeout=None`` for ever, else the timeout times the attempts."""
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)  # reads requests, answers none
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    client = MemoryClient(f"tcp://127.0.0.1:{port}", "alice", "t", timeout=timeout)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.ping()
        except BaseException as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=call, daemon=True)
    try:
        waiting.start()
        time.sleep(0.3)
        started = time.monotonic()
        client.close()
        waiting.join(5)
        assert time.monotonic() - started < 2
        assert [str(e) for e in outcome] == ["client is closed"]
    finally:
        client.close()
        silent.close(linger=0)
        ctx.term()


class _Preempted(MemoryClient):
    """A client whose thread "B" is held after its "is the client open?" check until the
    loop thread has stopped, as a preempted thread would be, and again for ``pause``
    seconds once it has scheduled its request; and whose ``loop.close()`` comes ``delay``
    seconds late (timing only: no logic of the client is changed)."""

    def __init__(self, *args: Any, delay: float, pause: float = 0.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        closing, self._pause = self._loop.close, pause
        self._loop.close = lambda: (time.sleep(delay), closing())[1]  # type: ignore[method-assign]

    def _schedule(self, coro: Any) -> concurrent.futures.Future[Any]:
        if threading.current_thread().name != "B":
            return super()._schedule(coro)
        self._thread.join()
        future = super()._schedule(coro)
        time.sleep(self._pause)
        return future


def _nowait_ping_in_b(client: MemoryClient) -> dict[str, concurrent.futures.Future[Any]]:
    """``client.nowait().ping()`` in a thread named "B", started now; its future, once
    it has one, under ``"future"``."""
    got: dict[str, concurrent.futures.Future[Any]] = {}
    b = threading.Thread(
        target=lambda: got.setdefault("future", client.nowait().ping()), name="B", daemon=True
    )
    b.start()
    time.sleep(0.1)  # B is past its check, held before it schedules
    return got


def test_a_request_started_as_the_client_closes_ends_with_client_is_closed(bus: Bus) -> None:
    """Scheduled between the loop thread's exit and loop.close(), and tracked after
    close() ended the requests in flight, its future stayed pending for ever."""
    client = _Preempted(bus.server.address, "alice", bus.tokens["alice"], delay=0.1, pause=0.3)
    got = _nowait_ping_in_b(client)
    assert finishes(client.close)
    deadline = time.monotonic() + 5
    while "future" not in got and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(HivememError, match="client is closed"):
        got["future"].result(timeout=3)


def test_close_in_a_done_callback_run_by_close_itself_does_not_deadlock(bus: Bus) -> None:
    """close() ended the abandoned requests while holding its non-reentrant lock, in its
    own thread: a done-callback that closes the client (on any error, shut down) waited
    for that lock for ever, and so did every later close()."""
    client = _Preempted(bus.server.address, "alice", bus.tokens["alice"], delay=0.3)
    got = _nowait_ping_in_b(client)
    closed_in_callback = threading.Event()

    def close_on_error(_future: concurrent.futures.Future[Any]) -> None:
        client.close()
        closed_in_callback.set()

    def add_callback() -> None:  # while close() sleeps before loop.close()
        while "future" not in got:
            time.sleep(0.01)
        got["future"].add_done_callback(close_on_error)

    adding = threading.Thread(target=add_callback, daemon=True)
    adding.start()
    assert finishes(client.close, 5)
    assert closed_in_callback.wait(5)
    assert isinstance(got["future"].exception(0), HivememError)
    assert finishes(client.close, 2)  # a later close() from another thread too


def test_close_on_the_loop_thread_with_no_thread_to_finish_it_leaves_it_closable(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no thread could be started to finish the closing, the closing lock stayed
    held and the client marked closed: every later close() waited for ever."""
    start = threading.Thread.start

    def no_thread_to_close(thread: threading.Thread) -> None:
        if thread.name == "hivemem-client-close":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_thread_to_close)
    client = bus.client("alice", timeout=5.0)
    failed: list[BaseException] = []

    def close_here(_future: concurrent.futures.Future[Any]) -> None:
        try:
            client.close()
        except RuntimeError as exc:
            failed.append(exc)

    # The reply must come after the callback is attached, so that the loop thread runs it:
    # a ping answered first ran it at once in this thread (a CI run saw it so).
    with held(bus.server):
        client.nowait().ping().add_done_callback(close_here)
    deadline = time.monotonic() + 5
    while not failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [str(e) for e in failed] == ["can't start new thread"]
    assert finishes(client.close, 5)
    assert not client._thread.is_alive()
    with pytest.raises(HivememError, match="closed"):
        client.ping()
