"""How a request reaches the bus and its reply comes back: ids, sockets, retries, errors.

The transports here implement :class:`~hivemem.memory_bus.interfaces.Transport` (and its
blocking twin, :class:`~hivemem.memory_bus.interfaces.SyncTransport`).
:class:`~hivemem.memory_bus.requests._Requests` is what they share, free of I/O
(:mod:`hivemem.memory_bus.requests`): request ids under one ``client_id``, the frames,
reply matching and a reply's outcome. :class:`AsyncTransport`
keeps many requests in flight on one asyncio DEALER and matches replies to requests by
id; :class:`BlockingTransport` sends one request at a time on a plain DEALER in the
caller's thread. A request that times out is sent again *with the same id* after
reconnecting; the server answers a repeated id from memory, so a retried write is never
applied twice. :class:`~hivemem.memory_bus.local_transport.LocalTransport` hands the
same frames to a server running in this process (``BusServer.handle``): no socket, and no
thread hop.

Error replies and ZeroMQ failures become the project's errors at this boundary, once:
the class of :mod:`~hivemem.memory_bus.errors` a reply's code names
(:func:`~hivemem.memory_bus.requests.error_from_reply`), ``BusTimeoutError`` when no
reply comes, ``RemoteError`` for a code unknown here. The clients over these
transports live in :mod:`hivemem.memory_bus.client`, which exports the errors too. The
sockets are opened by :mod:`hivemem.memory_bus.sockets` (and a client's CURVE keys read
by its ``curve_keys``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from numbers import Integral
from typing import Any, cast

import zmq
import zmq.asyncio
from hivemem.memory_bus.errors import HivememError, InvalidInputError
from hivemem.memory_bus.protocol import REQUEST_ID_LIMIT, Reply
from hivemem.memory_bus.requests import (
    _Requests,
    check_curve,
)
from hivemem.memory_bus.sockets import (
    blocking_context,
    cancelling,
    client_context,
    connected,
    subscribed,
)

MAX_IN_FLIGHT = 1024
"""How many requests one asynchronous client keeps in flight at most, by default: well
below the bus's memory of each agent's replies (``dedup_size // 10``, 10,000 by default),
so that a write resent after a stall is still answered from it, never applied again."""

DEFAULT_HWM = 1000
"""ZeroMQ's default queue limit (``SNDHWM``, ``RCVHWM``), kept for a smaller cap."""


def check_max_in_flight(max_in_flight: Any) -> int:
    """``max_in_flight`` as an int >= 1.

    Raises:
        InvalidInputError: naming ``max_in_flight``.
    """
    if (
        isinstance(max_in_flight, bool)
        or not isinstance(max_in_flight, Integral)
        or max_in_flight < 1
    ):
        raise InvalidInputError("max_in_flight", f"must be an int >= 1; got {max_in_flight!r}")
    return int(max_in_flight)


def check_request_start(start: Any) -> int:
    """``start`` as the first id of a renumbered sequence: an int in [0, :data:`REQUEST_ID_LIMIT`).

    Raises:
        InvalidInputError: naming ``start``.
    """
    if (
        isinstance(start, bool)
        or not isinstance(start, Integral)
        or not 0 <= int(start) < REQUEST_ID_LIMIT
    ):
        raise InvalidInputError(
            "start", f"request ids are ints in [0, 2**64) (msgpack's unsigned ints); got {start!r}"
        )
    return int(start)


class AsyncTransport:
    """One asyncio DEALER socket, requests in flight matched by id, reconnect on timeout.

    A timeout replaces the socket (a fresh connection, as the lazy pirate pattern does)
    and sends every request still in flight again on the new one, with its id, once and
    in the order of their ids (the order they were first sent): replies already on their
    way to the old socket are lost with it, and the server answers a resent write from
    memory. Each request remembers the connection it was last sent on, so that its own
    retry, when its timeout comes, does not send it a second time on the same one (two
    copies, or an order the server did not see first, made pipelined updates of one item
    conflict: the caller was told an update failed that a later copy then applied).

    At most ``max_in_flight`` requests are in flight at once; a call beyond them waits for
    a slot before it takes an id (backpressure, as Kafka's
    ``max.in.flight.requests.per.connection``). The server remembers each agent's last
    replies only (``dedup_size // 10`` of them): a write resent after more of its own
    agent's writes than that were applied was applied twice, and the cap keeps the
    requests that can come between a write and its resend well below that window.
    The transport belongs to the event loop it first ran in.

    Raises:
        InvalidInputError: ``max_in_flight`` is not an int >= 1 (or another argument
            cannot work, see :class:`~hivemem.memory_bus.requests._Requests`).
    """

    def __init__(
        self,
        address: str,
        timeout: float | None,
        retries: int,
        curve: dict[str, bytes] | None,
        client_id: int | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.requests = _Requests(address, timeout, retries, client_id)
        check_curve(curve)
        self.max_in_flight = check_max_in_flight(max_in_flight)
        self.address, self.curve = address, curve
        self.ctx = client_context()  # shared, never terminated (see there)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._frames: dict[int, list[bytes]] = {}  # of the requests in flight
        self._sent_on: dict[int, int] = {}  # the generation each was last sent on
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._streams: set[zmq.asyncio.Socket] = set()  # event streams' SUBs still open

    def _connect(self) -> zmq.asyncio.Socket:
        # queues deep enough for every request in flight: a reconnect resends them all
        # at once, and one the queue had no room for would be sent out of its order
        hwm = max(DEFAULT_HWM, self.max_in_flight)
        sock = connected(self.ctx, zmq.DEALER, self.address, self.curve, hwm=hwm)
        self._sock = sock
        self._generation += 1
        self._reader = asyncio.get_running_loop().create_task(self._read(sock))
        return sock

    def _check_open(self) -> None:
        if self._closed:
            raise HivememError("client is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # its reader task and sockets live in that loop
            raise HivememError(
                "this client runs in the event loop it was first used in: make one per loop"
            )

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            reply = self.requests.decode(frames)
            future = self._pending.get(reply.id) if reply is not None else None
            if future is not None and not future.done():
                future.set_result(reply)

    def _reconnect(self, generation: int) -> None:
        """A fresh socket, and every request in flight sent again on it, in id order."""
        if generation != self._generation:
            return  # another request already reconnected (and resent this one)
        if self._reader is not None:
            self._reader.cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
        sock = self._connect()
        for req_id in sorted(self._frames):
            # Its reply, if any, was on its way to the socket just closed.
            if self._pending[req_id].done():
                continue
            sent = cast(
                "asyncio.Future[Any]", sock.send_multipart(self._frames[req_id], zmq.NOBLOCK)
            )
            if sent.done() and sent.exception() is not None:
                break  # no room (cannot happen below the queue's limit): the rest send their own
            sent.add_done_callback(_quietly)
            self._sent_on[req_id] = self._generation

    async def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        self._check_open()
        if self._sock is None:
            try:
                self._connect()
            except zmq.ZMQError as exc:  # a malformed address, an unknown transport
                raise self.requests.transport_error(exc) from exc
        async with self._slots:  # the id is taken once a slot is: ids go out in order
            req_id, frames = self.requests.encode(op, agent, token, args)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[req_id], self._frames[req_id] = future, frames
            try:
                return await self._attempts(req_id, frames, future)
            finally:
                self._pending.pop(req_id, None)
                self._frames.pop(req_id, None)
                self._sent_on.pop(req_id, None)

    async def _attempts(self, req_id: int, frames: list[bytes], future: asyncio.Future[Any]) -> Any:
        for _attempt in range(self.requests.attempts):
            generation, sock = self._generation, self._sock
            if sock is None or self._closed:
                raise HivememError("client is closed")
            try:
                deadline = _deadline(self.requests.timeout)
                if self._sent_on.get(req_id) != generation:  # else a reconnect resent it
                    self._sent_on[req_id] = generation
                    # done at once, unless it must wait
                    sent = cast("asyncio.Future[Any]", sock.send_multipart(frames))
                    # then within the timeout: a DEALER with no connection to queue on (a
                    # refused CURVE handshake) holds a send for ever
                    await (sent if sent.done() else asyncio.wait_for(sent, self.requests.timeout))
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                reply = await asyncio.wait_for(asyncio.shield(future), left)
            except TimeoutError:
                if self._closed:
                    raise HivememError("client is closed") from None
                self._reconnect(generation)
                continue
            except asyncio.CancelledError:
                if cancelling():
                    raise  # the caller cancelled it
                if self._closed:  # close() ended a send waiting at the queue's limit
                    raise HivememError("client is closed") from None
                continue  # a send waiting at the queue's limit, on a socket since replaced
            except zmq.ZMQError as exc:
                if self._closed:
                    raise HivememError("client is closed") from exc
                raise self.requests.transport_error(exc) from exc
            return self.requests.outcome(reply)
        raise self.requests.timed_out()

    def number_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ...

        Raises:
            HivememError: requests are in flight: one renumbered onto an id in flight
                took its place, and that request never got its reply.
        """
        if self._frames:
            raise HivememError(
                f"cannot renumber requests while {len(self._frames)} are in flight: "
                "await them first"
            )
        self.requests.number_from(start)

    def blocking(self) -> BlockingTransport:
        """A plain DEALER for blocking calls, numbering requests in this one's sequence."""
        return BlockingTransport(self.requests, self.curve)

    def events(self, address: str, subscriptions: list[bytes]) -> AsyncGenerator[list[bytes], None]:
        """Messages on the event socket at ``address`` (a SUB with this one's CURVE keys)."""
        return subscribed(self.ctx, address, self.curve, subscriptions, self._streams)

    def close(self) -> None:
        """Close the socket, any event stream's, and the context (idempotent); requests
        in flight end with "client is closed"."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HivememError("client is closed"))
                # Taken here: a request stuck at its send (past the queue's limit) ends
                # with that error too, but never awaits this future, which asyncio would
                # then log as an exception never retrieved.
                future.exception()
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = None
        # An event stream whose generator is not closed yet still holds its SUB.
        for sub in list(self._streams):
            sub.close(linger=0)


def _quietly(sent: asyncio.Future[Any]) -> None:
    """Take the outcome of a send nobody awaits (a resend the queue had no room for
    waits for its request's own retry)."""
    if not sent.cancelled():
        sent.exception()


class BlockingTransport:
    """One plain DEALER used in the caller's thread: a blocking call without a thread hop.

    Calls take a lock, so threads sharing a client take turns on the socket, one request
    in flight at a time. A reply of another id (a late answer to an attempt that timed
    out) is dropped. On timeout the socket is replaced and the request sent again with
    the same id, so the server answers a retried write from memory.
    """

    immediate = False  # a call waits for the server's reply over the socket

    def __init__(self, requests: _Requests, curve: dict[str, bytes] | None) -> None:
        self.requests, self.curve = requests, curve
        self.ctx = blocking_context()  # shared, never terminated
        self._sock: Any = None  # connected on first use, and again after a timeout
        # the socket's RCVTIMEO and SNDTIMEO (-1: ZeroMQ's default, wait for ever)
        self._timeouts = dict.fromkeys((zmq.RCVTIMEO, zmq.SNDTIMEO), -1)
        self._closed = False
        self._closing = False  # set by close() at once: a call waiting sees it in a slice
        self._lock = threading.Lock()

    def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        """Send one request and wait for its result.

        Raises:
            BusTimeoutError: No reply after every attempt.
            HivememError: The error the server replied with, a ZeroMQ failure, or a
                closed client (also when it is closed while this call waits).
        """
        with self._lock:
            if self._closing:
                raise HivememError("client is closed")
            req_id, frames = self.requests.encode(op, agent, token, args)
            try:
                return self._attempts(req_id, frames)
            except zmq.ZMQError as exc:
                raise self.requests.transport_error(exc) from exc

    def _attempts(self, req_id: int, frames: list[bytes]) -> Any:
        for _attempt in range(self.requests.attempts):
            if self._sock is None:
                self._sock = connected(self.ctx, zmq.DEALER, self.requests.address, self.curve)
            deadline = _deadline(self.requests.timeout)
            if self._sent(frames, deadline):
                reply = self._reply(req_id, deadline)
                if reply is not None:
                    return self.requests.outcome(reply)
            self._drop_socket()  # a new connection, in case the old one is stuck
        raise self.requests.timed_out()

    def _sent(self, frames: list[bytes], deadline: float | None) -> bool:
        """Queue ``frames`` on the socket before ``deadline``; False if it took none by
        then. A DEALER with no connection to queue on (one whose CURVE handshake the
        server refused, say) blocks its send: the send waited for ever, whatever the
        client's timeout (a test's client hung there for 300 s on a loaded machine)."""
        for _ in self._slices(zmq.SNDTIMEO, deadline):
            try:
                self._sock.send_multipart(frames)
                return True
            except zmq.Again:
                pass
        return False

    def _reply(self, req_id: int, deadline: float | None) -> Reply | None:
        """The reply to ``req_id`` if it comes before ``deadline`` (None: however long it
        takes), else None.

        The wait is a receive with the socket's timeout (``RCVTIMEO``, see
        :meth:`_slices`): ``Socket.poll`` builds a poller on every call, which cost a tenth
        of a single write's round trip here.
        """
        for _ in self._slices(zmq.RCVTIMEO, deadline):
            try:
                frames = self._sock.recv_multipart()
            except zmq.Again:
                continue
            reply = self.requests.decode(frames)
            if reply is not None and reply.id == req_id:
                return reply
        return None

    def _slices(self, option: zmq.SocketOption, deadline: float | None) -> Iterator[None]:
        """A wait on the socket until ``deadline`` (None: for ever), in slices of at most
        :data:`WAIT_SLICE_MS`: before each, the socket's ``option`` (``RCVTIMEO`` or
        ``SNDTIMEO``) is set to the slice, only when it changes. After each, a call that
        :meth:`close` waits for ends ("client is closed")."""
        while (wait_ms := _ms_left(deadline)) != 0:
            wait_ms = WAIT_SLICE_MS if wait_ms < 0 else min(wait_ms, WAIT_SLICE_MS)
            if wait_ms != self._timeouts[option]:
                self._sock.setsockopt(option, wait_ms)
                self._timeouts[option] = wait_ms
            yield
            if self._closing:
                raise HivememError("client is closed")

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            self._timeouts = dict.fromkeys(self._timeouts, -1)

    def close(self) -> None:
        """Close the socket and the context; idempotent. A call waiting for its reply in
        another thread ends with "client is closed" within :data:`WAIT_SLICE_MS` (it
        waited out its timeout and retries before: with ``timeout=None``, for ever)."""
        self._closing = True
        with self._lock:
            if not self._closed:
                self._closed = True
                self._drop_socket()


WAIT_SLICE_MS = 200
"""The longest a blocking call waits on its socket before it looks whether the client
is being closed (and waits on, if not)."""


def _deadline(timeout: float | None) -> float | None:
    """When a wait of ``timeout`` seconds from now ends, on the monotonic clock (None: never)."""
    return None if timeout is None else time.monotonic() + timeout


def _ms_left(deadline: float | None) -> int:
    """Milliseconds to ``deadline``, rounded up; 0 once it passed; -1 (ZeroMQ's "for ever")
    for None."""
    if deadline is None:
        return -1
    left = deadline - time.monotonic()
    return math.ceil(left * 1000) if left > 0 else 0
