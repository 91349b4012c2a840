"""Clients of the bus: one asyncio core, a thin synchronous wrapper, agent-scoped handles.

:class:`AsyncMemoryClient` (:mod:`hivemem.memory_bus.async_client`) keeps many requests
in flight on one DEALER socket and matches replies to requests by id. A request that times out is sent again *with the same id*
after reconnecting; the server answers a repeated id from memory, so a retried write is
never applied twice. :class:`MemoryClient` runs the same core on a private event loop
thread for its ``nowait`` calls and sharded buses; its blocking calls to one server go
out on a plain socket in the caller's thread, with the same ids and the same retries
(both transports, and what they share, live in :mod:`hivemem.memory_bus.transport`).
Every op is written once, in :class:`~hivemem.memory_bus.ops.Ops`.

Users import the client from here: this module also exports :class:`Ops`,
:class:`OnBehalf`, :func:`encode_write_entries` and the errors a call raises besides
those of :mod:`~hivemem.memory_bus.errors` (:class:`BusTimeoutError`,
:class:`RemoteError`, made by :func:`error_from_reply`).

Example:
    >>> client = MemoryClient("tcp://127.0.0.1:7777")  # doctest: +SKIP
    >>> alice = client.as_agent("alice", token)  # doctest: +SKIP
    >>> alice.write("private", "alice", NewItem("the vault code is 4417"), now=0.0)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any

from hivemem.memory_bus.async_client import AsyncMemoryClient, one_of
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.interfaces import SyncTransport
from hivemem.memory_bus.local_transport import LocalTransport
from hivemem.memory_bus.ops import (
    OnBehalf,
    Ops,
    WriteEntries,
    encode_write_entries,
    name_list,
)
from hivemem.memory_bus.requests import BusTimeoutError, RemoteError, error_from_reply
from hivemem.memory_bus.transport import check_request_start

__all__ = [
    "AsyncMemoryClient",
    "BusTimeoutError",
    "LocalTransport",
    "MemoryClient",
    "OnBehalf",
    "Ops",
    "RemoteError",
    "WriteEntries",
    "encode_write_entries",
    "error_from_reply",
]


CLOSE_WAIT_S = 1.0
"""How long ``MemoryClient.close`` lets the requests it ended finish (a stream an
iterator still holds, say, is abandoned after it)."""


class _InFlight:
    """The ``nowait`` futures of one connection that have not completed yet.

    A future is started and tracked in one step under the lock (:meth:`start`), and
    :meth:`end` ends the futures under the same lock: one started while the client
    closes is either among those ended or started after, and failed at once. Apart, a
    coroutine scheduled after the loop thread stopped but before ``end`` listed the
    futures was tracked too late, and its future stayed pending for ever.
    """

    def __init__(self) -> None:
        self._futures: dict[concurrent.futures.Future[Any], Coroutine[Any, Any, Any]] = {}
        self._lock = threading.Lock()
        self._ended = False

    def start(
        self,
        check: Callable[[], None],
        schedule: Callable[[], concurrent.futures.Future[Any]],
        coro: Coroutine[Any, Any, Any],
    ) -> concurrent.futures.Future[Any]:
        """``check()`` that the client is usable, then ``schedule()`` ``coro``, and track
        its future until it completes (failed at once if :meth:`end` ran already)."""
        with self._lock:
            check()
            future = schedule()
            ended = self._ended
            if not ended:
                self._futures[future] = coro
        if ended:
            _end(future, coro)
        else:
            future.add_done_callback(self._discard)
        return future

    def _discard(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.pop(future, None)

    def wait(self) -> None:
        """Return once every future tracked so far has completed, however it ended."""
        if not self._futures:
            return  # the common case: no nowait request in flight, no lock taken
        with self._lock:
            pending = list(self._futures)
        concurrent.futures.wait(pending)

    def end(self) -> None:
        """End the futures still pending with "client is closed", and any started later:
        the loop that would have completed them is closed, and their waiters would wait
        for ever. Call it without holding a lock a done-callback may take (its
        ``set_exception`` runs their callbacks in this thread, and one may close the
        client)."""
        with self._lock:
            self._ended = True
            pending = list(self._futures.items())
        for future, coro in pending:
            _end(future, coro)


def _end(future: concurrent.futures.Future[Any], coro: Coroutine[Any, Any, Any]) -> None:
    """Fail ``future`` with "client is closed" (unless done meanwhile); its coroutine, if
    the closed loop never started it, is closed too (else it warns "never awaited")."""
    if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # done meanwhile
        future.set_exception(HivememError("client is closed"))


class MemoryClient(Ops):
    """The synchronous client.

    Talking to one address, a blocking call is sent and answered in the caller's thread
    on a plain DEALER of its own (a hop to an event-loop thread and back would add three
    thread switches to every call). :meth:`nowait` calls run on the async core, on a private
    event-loop thread. Both number their requests in one sequence under one
    ``client_id``, so :meth:`number_requests_from` covers both.

    Blocking calls (and iterating :meth:`events`) are refused on the client's own
    event-loop thread, where the done-callbacks of ``nowait`` futures run: they would wait
    for that thread, which would never get to answer. Call them from another thread, or
    use :class:`AsyncMemoryClient`. :meth:`close` works there too (it returns at once,
    and the client finishes closing in the background).

    A blocking call made while ``nowait`` requests of this connection are in flight
    first waits for them to complete. The two paths use different sockets, and the
    server owes no order to requests that arrive on different connections, so waiting
    for the earlier replies is what guarantees that the blocking call cannot overtake
    them. It costs nothing when none is in flight, the common case.

    Given several addresses (a list, or one string with commas), the core is an
    :class:`~hivemem.memory_bus.sharding.AsyncShardedClient`: the bus is sharded by
    namespace over those servers, every op here works the same, and blocking calls
    too run on the event-loop thread.

    Args:
        address: The server's ROUTER address, or several (sharded).
        agent: Default agent id for requests (see :meth:`as_agent`).
        token: That agent's token.
        **kw: Passed to :class:`AsyncMemoryClient` (timeout, retries, curve, client_id,
            max_in_flight for ``nowait`` requests, or a transport instead of the address: then ``nowait`` requests of an
            immediate one, such as :class:`~hivemem.memory_bus.local_transport.LocalTransport`,
            are answered before the call returns).
    """

    def __init__(
        self, address: str | Sequence[str] = "", agent: str = "", token: str = "", **kw: Any
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hivemem-client", daemon=True
        )
        self._thread.start()
        self._closing = threading.Lock()  # close() from several threads: one does it
        self._closed = threading.Event()  # set as close() begins, for every handle
        self._owner = True  # closes the connection; its as_agent handles do not
        self._in_flight = _InFlight()  # nowait requests
        self._waiting = _InFlight()  # blocking calls waiting on the loop (sharded, events)
        try:
            self._core = self._run(_make_async(address, agent, token, kw))
        except BaseException:  # a bad argument: the loop thread must not outlive it
            self._stop_loop()
            self._end_requests()
            raise
        self._blocking = _blocking_for(self._core)
        self.agent, self.token = agent, token

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def _check_usable(self, blocking: bool) -> None:
        """Raise unless a call may go ahead: the client is open, and a ``blocking`` one is
        not made on the loop thread (it would wait for the thread it holds)."""
        if self._closed.is_set() or self._loop.is_closed():
            raise HivememError("client is closed")
        if blocking and self._on_loop_thread():
            raise HivememError(
                "a blocking call of MemoryClient cannot run on its own event-loop thread "
                "(where nowait futures run their done-callbacks): it would wait for that "
                "thread for ever. Call it from another thread, or use AsyncMemoryClient"
            )

    def _schedule(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """``coro`` started on the loop, without waiting for it."""
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError as exc:  # the loop was closed meanwhile
            coro.close()
            raise HivememError("client is closed") from exc

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and wait for its result, from another thread."""
        # tracked: ended by close() if the loop stops before it runs
        return self._started(self._waiting, coro, blocking=True).result()

    def _started(
        self, tracked: _InFlight, coro: Coroutine[Any, Any, Any], blocking: bool
    ) -> concurrent.futures.Future[Any]:
        """``coro`` scheduled on the loop and tracked by ``tracked``, if the client is
        usable (checked in the same step, so that close() cannot come in between)."""
        try:
            return tracked.start(
                lambda: self._check_usable(blocking), lambda: self._schedule(coro), coro
            )
        except HivememError:
            coro.close()
            raise

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> Any:
        self._check_usable(blocking=True)
        if self._blocking is None:
            return self._run(self._core.as_agent(self.agent, self.token)._call(op, args, decode))
        self._in_flight.wait()
        result = self._blocking.call(op, self.agent, self.token, args)
        return decode(result) if decode is not None else result

    def _submit(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> concurrent.futures.Future[Any]:
        self._check_usable(blocking=False)
        if self._blocking is not None and self._blocking.immediate:
            return _answered(lambda: self._call(op, args, decode))
        core = self._core.as_agent(self.agent, self.token)
        return self._started(self._in_flight, core._call(op, args, decode), blocking=False)

    def number_requests_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ... (see ``AsyncMemoryClient``).

        Waits first for this connection's ``nowait`` requests in flight, as a blocking
        call does: one renumbered onto an id in flight would take its reply.

        Raises:
            InvalidInputError: ``start`` is not an int in [0, 2**64) (the wire's ids).
            HivememError: called on an :meth:`as_agent` handle (it would renumber its
                owner's connection), or the client is closed.
        """
        if not self._owner:
            raise HivememError(
                "an as_agent handle cannot renumber the requests of the connection it "
                "shares: renumber them on the client that made it"
            )
        start = check_request_start(start)
        self._check_usable(blocking=True)
        self._in_flight.wait()
        self._core.number_requests_from(start)

    def events(self, topics: list[str], timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Memory events of ``topics``, one at a time in this thread.

        The async core's stream (:meth:`AsyncMemoryClient.events`: which topics an agent
        may name, and what a refused one raises), iterated from the caller's thread.

        Args:
            topics: ``"tier/namespace"`` each (the admin may also give ``"tier/"`` or ``""``).
            timeout: End the iteration after this many seconds without an event; None
                waits for ever.

        Raises:
            InvalidInputError: ``topics`` is a str, not a list of them.
            HivememError: iterated on the client's event-loop thread (see the class
                docstring), or the client is closed.
        """
        topics = name_list(topics, "topics")
        stream = self._core.as_agent(self.agent, self.token).events(topics)

        async def following() -> dict[str, Any]:
            # wait_for cancels the wait and lets the stream finish it before returning
            return await asyncio.wait_for(stream.__anext__(), timeout)

        try:
            while True:
                try:
                    yield self._run(following())
                except TimeoutError:
                    return
        finally:
            self._end_stream(stream)

    def _end_stream(self, stream: AsyncIterator[dict[str, Any]]) -> None:
        """Close an :meth:`events` stream on the loop: waiting for it from another thread
        (its SUB socket is closed on return), not on the loop thread (a collection of an
        abandoned iterator may run there, and would wait for itself)."""
        closing = getattr(stream, "aclose", None)
        if closing is None or self._closed.is_set() or self._loop.is_closed():
            return  # the client's close ends every stream
        with contextlib.suppress(HivememError):  # closed meanwhile: ended by that close
            if self._on_loop_thread():
                self._schedule(closing())
            else:
                self._run(closing())

    def nowait(self) -> Ops:
        """A handle whose op methods send the request and return a Future of the result.

        ``concurrent.futures.Future.result()`` gives what the blocking method returns (or
        raises what it raises). Requests sent one after another go out in that order on
        the same connection, so a caller can keep several in flight and work on the
        first reply while the bus answers the next. A blocking call made meanwhile
        waits for them first (see the class docstring).

        Example:
            >>> first = client.nowait().search_many("private", queries, now=3.0)  # doctest: +SKIP
            >>> hits = first.result()  # doctest: +SKIP
        """
        return _Submitting(self)

    def as_agent(self, agent: str, token: str) -> MemoryClient:
        """A handle on the same connection that acts as ``agent``.

        It holds ``agent``'s credentials only (not this client's), and the connection
        stays this client's: closing the handle (or leaving its ``with``) does nothing.
        """
        handle = object.__new__(MemoryClient)
        handle._loop, handle._thread = self._loop, self._thread
        handle._closing, handle._closed = self._closing, self._closed
        handle._in_flight, handle._waiting = self._in_flight, self._waiting
        handle._core, handle._blocking = self._core.as_agent(agent, token), self._blocking
        handle._owner = False
        handle.agent, handle.token = agent, token
        return handle

    def close(self) -> None:
        """Close the connection and stop the loop thread; a second call (from any
        thread) does nothing, and so does closing an :meth:`as_agent` handle. ``nowait``
        requests still in flight end with "client is closed", as does any call after
        this. Called on the loop thread (from a done-callback), it returns at once and
        the closing goes on in another thread: the loop must run to finish it."""
        if not self._owner:
            return
        if self._on_loop_thread():
            self._close_in_background()
            return
        with self._closing:
            if self._closed.is_set():
                return
            self._closed.set()
            self._shut_down()
        self._end_requests()  # not under _closing: a done-callback it runs may close()

    def _close_in_background(self) -> None:
        # Never wait for the lock here: a thread closing the client holds it while it
        # waits for this very loop.
        if not self._closing.acquire(blocking=False):
            return  # another thread is closing it
        if self._closed.is_set():
            self._closing.release()
            return
        self._closed.set()

        def finish() -> None:
            try:
                self._shut_down()
            finally:
                self._closing.release()  # held until the closing ends, as in close()
            self._end_requests()

        try:
            threading.Thread(target=finish, name="hivemem-client-close", daemon=True).start()
        except BaseException:  # no thread to be had: the client stays open, and closable
            self._closed.clear()
            self._closing.release()
            raise

    def _shut_down(self) -> None:
        """Close the sockets, let the requests this ends finish, stop the loop thread."""

        async def shutdown() -> None:
            self._core.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if others:  # the requests close() ended: let them finish their futures
                await asyncio.wait(others, timeout=CLOSE_WAIT_S)
            await asyncio.get_running_loop().shutdown_asyncgens()  # event streams left open

        try:
            if self._blocking is not None:
                self._blocking.close()
            self._schedule(shutdown()).result()
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _end_requests(self) -> None:
        """End the requests the stopped loop never ran, or abandoned (and any started
        from now on)."""
        self._in_flight.end()
        self._waiting.end()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Submitting(Ops):
    """The ops of a :class:`MemoryClient`, each returning a Future instead of waiting."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client
        self.agent, self.token = client.agent, client.token

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> concurrent.futures.Future[Any]:
        return self._client._submit(op, args, decode)


def _answered(call: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """A future already holding what ``call()`` returned or raised."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    try:
        future.set_result(call())
    except Exception as exc:  # the caller gets it from result(), as from any future
        future.set_exception(exc)
    return future


def _blocking_for(core: Any) -> SyncTransport | None:
    """The blocking twin of a one-transport core's transport, sharing its ids; None if
    sharded (or the transport has none)."""
    if not isinstance(core, AsyncMemoryClient):
        return None
    return core._transport.blocking()


async def _make_async(
    address: str | Sequence[str], agent: str, token: str, kw: dict[str, Any]
) -> Any:
    from hivemem.memory_bus.sharding import AsyncShardedClient, split_addresses

    if kw.get("transport") is not None:
        one_of(address, kw["transport"])
        return AsyncMemoryClient(agent=agent, token=token, **kw)
    addresses = split_addresses(address)
    if len(addresses) == 1:
        return AsyncMemoryClient(addresses[0], agent, token, **kw)
    return AsyncShardedClient(addresses, agent, token, **kw)
