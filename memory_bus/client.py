"""Clients of the bus: one asyncio core, a thin synchronous wrapper, agent-scoped handles.

:class:`AsyncMemoryClient` keeps many requests in flight on one DEALER socket and matches
replies to requests by id. A request that times out is sent again *with the same id*
after reconnecting; the server answers a repeated id from memory, so a retried write is
never applied twice. :class:`MemoryClient` runs the same core on a private event loop
thread for its ``nowait`` calls and sharded buses; its blocking calls to one server go
out on a plain socket in the caller's thread, with the same ids and the same retries
(what both transports share lives in :class:`_Requests`). Every op is written once, in
:class:`Ops`.

Example:
    >>> client = MemoryClient("tcp://127.0.0.1:7777")  # doctest: +SKIP
    >>> alice = client.as_agent("alice", token)  # doctest: +SKIP
    >>> alice.write("private", "alice", NewItem("the vault code is 4417"), now=0.0)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio
from hivemem.memory_bus import errors
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import (
    HEADER,
    ProtocolError,
    Reply,
    decode_hit,
    decode_item,
    decode_reply,
    decode_write_result,
    decode_write_results,
    encode_new_item,
    encode_request,
    encode_write_columns,
    unpack,
    vector_to_bytes,
)


class BusTimeoutError(HivememError):
    """No reply within the timeout, after every retry."""

    code = "timeout"


class RemoteError(HivememError):
    """An error reply whose code names no local exception class."""


def _error_classes() -> dict[str, type[HivememError]]:
    found: dict[str, type[HivememError]] = {}
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, HivememError):
            found.setdefault(obj.code, obj)  # the first class of a code is its most general
    return found


_BY_CODE = _error_classes()


def error_from_reply(error: dict[str, Any]) -> HivememError:
    """The exception a server's error reply stands for, with its code, message and details."""
    code = str(error.get("code", "internal"))
    cls = _BY_CODE.get(code, ProtocolError if code in _PROTOCOL_CODES else RemoteError)
    exc = cls.__new__(cls)
    HivememError.__init__(exc, str(error.get("message", "")), **dict(error.get("details") or {}))
    exc.code = code
    return exc


_PROTOCOL_CODES = {"bad_frame", "bad_request", "unknown_op", "too_large", "unauthenticated"}


@dataclass(frozen=True, slots=True)
class OnBehalf:
    """The agent one batch entry acts for, with its token.

    An agent host batches the reads and writes of many agents into one request; each
    entry then names its own agent, and the server checks access per entry.
    """

    agent: str
    token: str


def _on_behalf(entry: dict[str, Any], who: Any) -> dict[str, Any]:
    if who is not None:
        if not isinstance(who, OnBehalf):
            raise TypeError(f"expected OnBehalf, got {type(who).__name__}")
        entry["agent"], entry["token"] = who.agent, who.token
    return entry


WriteEntries = dict[str, Any] | list[dict[str, Any]]
"""``write_many`` entries in wire form: columns (a map), or rows (a list of maps)."""


def encode_write_entries(entries: list[tuple[Any, ...]]) -> WriteEntries:
    """``write_many`` entries in wire form, for :meth:`Ops.write_many_encoded`.

    Columns (one list per field, every vector in one float32 blob: see
    ``docs/protocol.md``) whenever the entries allow it, which the server stores a
    batch at a time; rows otherwise (some items with a vector and some without, or
    some entries on behalf of an agent and some not). Encoding thousands of items takes
    milliseconds; a caller with time to spare before it must send (an agent host, while
    the other hosts step) can do it then.
    """
    behalf = [_nth(e, 2) for e in entries]
    acting = sum(who is not None for who in behalf)
    columns = None
    if acting in (0, len(entries)):
        columns = encode_write_columns([e[0] for e in entries], [e[1] for e in entries])
    if columns is None:
        return [
            _on_behalf({"namespace": e[0], "item": encode_new_item(e[1])}, who)
            for e, who in zip(entries, behalf, strict=True)
        ]
    if acting:
        bad = next((who for who in behalf if not isinstance(who, OnBehalf)), None)
        if bad is not None:
            raise TypeError(f"expected OnBehalf, got {type(bad).__name__}")
        columns["agent"] = [who.agent for who in behalf]
        columns["token"] = [who.token for who in behalf]
    return columns


class Ops:
    """Every bus op, written once; subclasses say how a call is carried out."""

    agent: str
    token: str

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> Any:
        raise NotImplementedError

    def ping(self) -> Any:
        """The server's protocol version and who it thinks you are."""
        return self._call("ping", {})

    def register(self, agent_id: str, groups: list[str] | None = None, role: str = "agent") -> Any:
        """Admin only: register an agent; returns ``{"token": ...}``."""
        return self._call(
            "register", {"agent_id": agent_id, "groups": list(groups or []), "role": role}
        )

    def write(self, tier: str, namespace: str, item: NewItem, *, now: float) -> Any:
        """Propose one item; returns the write policy's WriteResult."""
        args = {"tier": tier, "namespace": namespace, "item": encode_new_item(item), "now": now}
        return self._call("write", args, decode_write_result)

    def write_many(self, tier: str, entries: list[tuple[Any, ...]], *, now: float) -> Any:
        """Propose items in one message; returns a WriteResult each, in order.

        Each entry is ``(namespace, item)`` or ``(namespace, item, OnBehalf(agent, token))``.
        """
        return self.write_many_encoded(tier, encode_write_entries(entries), now=now)

    def write_many_encoded(self, tier: str, items: WriteEntries, *, now: float) -> Any:
        """:meth:`write_many` of entries already in wire form (:func:`encode_write_entries`)."""
        key = "columns" if isinstance(items, dict) else "items"
        return self._call(
            "write_many", {"tier": tier, key: items, "now": now}, decode_write_results
        )

    def get(self, tier: str, namespace: str, item_id: int, *, now: float | None = None) -> Any:
        """One item; with ``now`` the read counts as a recall."""
        args = {"tier": tier, "namespace": namespace, "item_id": item_id, "now": now}
        return self._call("get", args, decode_item)

    def search(
        self,
        tier: str,
        namespace: str,
        vector: np.ndarray,
        k: int = 10,
        *,
        now: float,
        as_of: float | None = None,
        vectors: bool = True,
    ) -> Any:
        """The ``k`` nearest items as Hits, best first.

        With ``vectors=False`` the hits' items come without their vectors (an empty
        array), which makes the reply several times smaller.
        """
        args = {
            "tier": tier,
            "namespace": namespace,
            "vector": vector_to_bytes(vector),
            "k": k,
            "now": now,
            "as_of": as_of,
            "compact": True,
        }
        if not vectors:
            args["vectors"] = False
        return self._call("search", args, _each(decode_hit))

    def search_many(
        self, tier: str, queries: list[tuple[Any, ...]], *, now: float, vectors: bool = True
    ) -> Any:
        """Queries in one message; one Hit list each, in order.

        Each query is ``(namespace, vector, k)``, optionally followed by ``as_of`` (None:
        no validity filter) and ``OnBehalf(agent, token)``. With ``vectors=False`` the
        hits' items come without their vectors (an empty array).
        """
        raw = [
            _on_behalf(
                {
                    "namespace": q[0],
                    "vector": vector_to_bytes(q[1]),
                    "k": q[2],
                    "as_of": _nth(q, 3),
                },
                _nth(q, 4),
            )
            for q in queries
        ]
        args: dict[str, Any] = {"tier": tier, "queries": raw, "now": now, "compact": True}
        if not vectors:
            args["vectors"] = False
        return self._call("search_many", args, _each(_each(decode_hit)))

    def update(
        self,
        tier: str,
        namespace: str,
        item_id: int,
        *,
        expected_version: int,
        now: float,
        **changes: Any,
    ) -> Any:
        """Change an item if it is still at ``expected_version``."""
        if "vector" in changes:
            changes["vector"] = vector_to_bytes(changes["vector"])
        args = {
            "tier": tier,
            "namespace": namespace,
            "item_id": item_id,
            "expected_version": expected_version,
            "now": now,
            "changes": changes,
        }
        return self._call("update", args, decode_item)

    def delete(self, tier: str, namespace: str, item_id: int, *, now: float) -> Any:
        """Remove an item."""
        return self._call(
            "delete", {"tier": tier, "namespace": namespace, "item_id": item_id, "now": now}
        )

    def history(self, tier: str, namespace: str, item_id: int) -> Any:
        """Every kept version of an item."""
        return self._call("history", {"tier": tier, "namespace": namespace, "item_id": item_id})

    def stats(self) -> Any:
        """Per-tier counts."""
        return self._call("stats", {})

    def add_edge(
        self, namespace: str, src: int, dst: int, type: str, *, now: float, **kw: Any
    ) -> Any:
        """Link two graph nodes; returns the edge id."""
        return self._call(
            "add_edge",
            {"namespace": namespace, "src": src, "dst": dst, "type": type, "now": now, **kw},
        )

    def invalidate_edge(self, namespace: str, edge_id: int, *, at: float) -> Any:
        """End an edge's validity."""
        return self._call("invalidate_edge", {"namespace": namespace, "edge_id": edge_id, "at": at})

    def edges(self, namespace: str, **kw: Any) -> Any:
        """Edges, optionally ``as_of``, ``node``, ``type``."""
        return self._call("edges", {"namespace": namespace, **kw})

    def neighbors(self, namespace: str, node_id: int, **kw: Any) -> Any:
        """Linked node ids."""
        return self._call("neighbors", {"namespace": namespace, "node_id": node_id, **kw})

    def promote(
        self, namespace: str, children: list[int], parent: NewItem, *, now: float, **kw: Any
    ) -> Any:
        """Write a parent above ``children`` and link them; returns its id."""
        args = {
            "namespace": namespace,
            "children": children,
            "parent": encode_new_item(parent),
            "now": now,
            **kw,
        }
        return self._call("promote", args)

    def retrieve(
        self, namespace: str, vector: np.ndarray, k: int = 10, *, now: float, **kw: Any
    ) -> Any:
        """Graph retrieval (vector seeds, then k-hop or PPR)."""
        args = {"namespace": namespace, "vector": vector_to_bytes(vector), "k": k, "now": now, **kw}
        return self._call("retrieve", args, _each(decode_hit))


def _nth(entry: tuple[Any, ...], n: int) -> Any:
    return entry[n] if len(entry) > n else None


def _each(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda values: [decode(v) for v in values]


class _Requests:
    """What both transports share, free of I/O: ids, frames, reply matching, outcomes.

    One :class:`MemoryClient` draws the ids of its blocking calls (caller threads) and of
    its ``nowait`` calls (loop thread) from one instance, so both paths number requests
    in one sequence under one ``client_id``.
    """

    def __init__(
        self, address: str, timeout: float, retries: int, client_id: int | None = None
    ) -> None:
        self.address, self.timeout, self.retries = address, timeout, retries
        self.client_id = secrets.randbits(63) if client_id is None else client_id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def attempts(self) -> int:
        """Sends of one request: the first and its retries."""
        return self.retries + 1

    def number_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ..."""
        with self._lock:
            self._ids = itertools.count(start)

    def encode(
        self, op: str, agent: str, token: str, args: dict[str, Any]
    ) -> tuple[int, list[bytes]]:
        """A fresh request id and the frames that carry the request under it."""
        with self._lock:
            req_id = next(self._ids)
        return req_id, encode_request(req_id, self.client_id, op, agent, token, args)

    @staticmethod
    def decode(frames: list[bytes]) -> Reply | None:
        """The reply in ``frames``, or None if they are not a reply (the caller retries)."""
        try:
            return decode_reply(frames)
        except ProtocolError:
            return None

    @staticmethod
    def outcome(reply: Reply) -> Any:
        """The result of an ok reply; raises the exception an error reply stands for."""
        if not reply.ok:
            raise error_from_reply(reply.error or {})
        return reply.result

    def timed_out(self) -> BusTimeoutError:
        """The error for a request that got no reply after every attempt."""
        return BusTimeoutError(
            f"no reply from {self.address} after {self.attempts} attempts of {self.timeout} s",
            address=self.address,
            attempts=self.attempts,
        )

    def transport_error(self, exc: zmq.ZMQError) -> HivememError:
        """A ZeroMQ failure as the project's error (raise it ``from exc``)."""
        return HivememError(f"transport error talking to {self.address}: {exc}")


def _dealer(ctx: zmq.Context[Any], address: str, curve: dict[str, bytes] | None) -> Any:
    """A DEALER of ``ctx`` connected to ``address``, with CURVE keys if given."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if curve:
            sock.curve_secretkey, sock.curve_publickey = curve["secret"], curve["public"]
            sock.curve_serverkey = curve["server"]
        sock.connect(address)
    except zmq.ZMQError:
        sock.close()  # an open socket would keep ctx.term() waiting forever
        raise
    return sock


class _Transport:
    """One asyncio DEALER socket, requests in flight matched by id, reconnect on timeout."""

    def __init__(
        self,
        address: str,
        timeout: float,
        retries: int,
        curve: dict[str, bytes] | None,
        client_id: int | None = None,
    ) -> None:
        self.requests = _Requests(address, timeout, retries, client_id)
        self.address, self.curve = address, curve
        self.ctx = zmq.asyncio.Context()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._generation = 0

    def _connect(self) -> None:
        sock = _dealer(self.ctx, self.address, self.curve)
        self._sock = sock
        self._generation += 1
        self._reader = asyncio.get_running_loop().create_task(self._read(sock))

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
        if generation != self._generation:
            return  # another request already reconnected
        if self._reader is not None:
            self._reader.cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
        self._connect()

    async def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        if self._sock is None:
            try:
                self._connect()
            except zmq.ZMQError as exc:  # a malformed address, an unknown transport
                raise self.requests.transport_error(exc) from exc
        req_id, frames = self.requests.encode(op, agent, token, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            return await self._attempts(frames, future)
        finally:
            self._pending.pop(req_id, None)

    async def _attempts(self, frames: list[bytes], future: asyncio.Future[Any]) -> Any:
        for _attempt in range(self.requests.attempts):
            generation, sock = self._generation, self._sock
            if sock is None:
                raise HivememError("client is closed")
            try:
                await sock.send_multipart(frames)
                reply = await asyncio.wait_for(asyncio.shield(future), self.requests.timeout)
            except TimeoutError:
                self._reconnect(generation)
                continue
            except zmq.ZMQError as exc:
                raise self.requests.transport_error(exc) from exc
            return self.requests.outcome(reply)
        raise self.requests.timed_out()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
        self.ctx.term()


class _BlockingTransport:
    """One plain DEALER used in the caller's thread: a blocking call without a thread hop.

    Calls take a lock, so threads sharing a client take turns on the socket, one request
    in flight at a time. A reply of another id (a late answer to an attempt that timed
    out) is dropped. On timeout the socket is replaced and the request sent again with
    the same id, so the server answers a retried write from memory.
    """

    def __init__(self, requests: _Requests, curve: dict[str, bytes] | None) -> None:
        self.requests, self.curve = requests, curve
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._sock: Any = None  # connected on first use, and again after a timeout
        self._wait_ms = -1  # the socket's RCVTIMEO (-1: ZeroMQ's default, wait forever)
        self._closed = False
        self._lock = threading.Lock()

    def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        """Send one request and wait for its result.

        Raises:
            BusTimeoutError: No reply after every attempt.
            HivememError: The error the server replied with, a ZeroMQ failure, or a
                closed client.
        """
        with self._lock:
            if self._closed:
                raise HivememError("client is closed")
            req_id, frames = self.requests.encode(op, agent, token, args)
            try:
                return self._attempts(req_id, frames)
            except zmq.ZMQError as exc:
                raise self.requests.transport_error(exc) from exc

    def _attempts(self, req_id: int, frames: list[bytes]) -> Any:
        for _attempt in range(self.requests.attempts):
            if self._sock is None:
                self._sock = _dealer(self.ctx, self.requests.address, self.curve)
            self._sock.send_multipart(frames)
            reply = self._reply(req_id, time.monotonic() + self.requests.timeout)
            if reply is not None:
                return self.requests.outcome(reply)
            self._drop_socket()  # a new connection, in case the old one is stuck
        raise self.requests.timed_out()

    def _reply(self, req_id: int, deadline: float) -> Reply | None:
        """The reply to ``req_id`` if it comes before ``deadline``, else None.

        The wait is a receive with the socket's timeout (``RCVTIMEO``), set only when the
        time left changes: ``Socket.poll`` builds a poller on every call, which cost a
        tenth of a single write's round trip here.
        """
        while (left := deadline - time.monotonic()) > 0:
            wait_ms = math.ceil(left * 1000)
            if wait_ms != self._wait_ms:
                self._sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                self._wait_ms = wait_ms
            try:
                frames = self._sock.recv_multipart()
            except zmq.Again:
                return None
            reply = self.requests.decode(frames)
            if reply is not None and reply.id == req_id:
                return reply
        return None

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            self._wait_ms = -1

    def close(self) -> None:
        """Close the socket (after a call in progress) and the context; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._drop_socket()
                self.ctx.term()


class AsyncMemoryClient(Ops):
    """The asyncio client: every op method returns a coroutine.

    Args:
        address: The server's ROUTER address (``tcp://host:port``).
        agent: Default agent id for requests (see :meth:`as_agent`).
        token: That agent's token.
        timeout: Seconds to wait for one reply before retrying.
        retries: Retries after a timeout (each with the same request id).
        curve: ``{"public", "secret", "server"}`` z85 keys for CURVE, or None.
        client_id: Who the server remembers requests under (random if None). A process
            that replays requests after a crash passes the same id and numbers its
            requests as before (:meth:`number_requests_from`), so the server answers
            the replayed writes from memory instead of applying them again.
    """

    def __init__(
        self,
        address: str,
        agent: str = "",
        token: str = "",
        *,
        timeout: float = 10.0,
        retries: int = 2,
        curve: dict[str, bytes] | None = None,
        client_id: int | None = None,
    ) -> None:
        if client_id is not None and not 0 <= client_id < 2**63:
            raise ValueError("client_id must be in [0, 2**63)")
        self.agent, self.token = agent, token
        self._transport = _Transport(address, timeout, retries, curve, client_id)

    def number_requests_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ... (see ``client_id``)."""
        self._transport.requests.number_from(start)

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> Any:
        return self._decoded(op, args, decode)

    async def _decoded(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> Any:
        result = await self._transport.call(op, self.agent, self.token, args)
        return decode(result) if decode is not None else result

    async def events(
        self, topics: list[str], pub_address: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Memory events (add/update/delete/evict) of ``topics`` ("tier/namespace" prefixes).

        The PUB address comes from ``ping`` unless given. Yields decoded event maps.
        """
        address = pub_address or (await self.ping())["pub"]
        sock = self._transport.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(address)
        try:
            while True:
                frames = await sock.recv_multipart()
                if len(frames) == 3 and frames[1] == HEADER:
                    for event in unpack(frames[2]):
                        yield event
        finally:
            sock.close(linger=0)

    def as_agent(self, agent: str, token: str) -> AsyncMemoryClient:
        """A handle on the same connection that acts as ``agent``."""
        handle = object.__new__(AsyncMemoryClient)
        handle.agent, handle.token, handle._transport = agent, token, self._transport
        return handle

    def close(self) -> None:
        """Close the socket (call from the loop that used it)."""
        self._transport.close()


class _InFlight:
    """The ``nowait`` futures of one connection that have not completed yet."""

    def __init__(self) -> None:
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()

    def add(self, future: concurrent.futures.Future[Any]) -> None:
        """Track ``future`` until it completes."""
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._discard)

    def _discard(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def wait(self) -> None:
        """Return once every future tracked so far has completed, however it ended."""
        if not self._futures:
            return  # the common case: no nowait request in flight, no lock taken
        with self._lock:
            pending = list(self._futures)
        concurrent.futures.wait(pending)


class MemoryClient(Ops):
    """The synchronous client.

    Talking to one address, a blocking call is sent and answered in the caller's thread
    on a plain DEALER of its own (a hop to an event-loop thread and back would add three
    thread switches to every call). :meth:`nowait` calls run on the async core, on a private
    event-loop thread. Both number their requests in one sequence under one
    ``client_id``, so :meth:`number_requests_from` covers both.

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
        **kw: Passed to :class:`AsyncMemoryClient` (timeout, retries, curve, client_id).
    """

    def __init__(
        self, address: str | Sequence[str], agent: str = "", token: str = "", **kw: Any
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hivemem-client", daemon=True
        )
        self._thread.start()
        self._core = self._run(_make_async(address, agent, token, kw))
        self._blocking = _blocking_for(self._core)
        self._in_flight = _InFlight()
        self.agent, self.token = agent, token

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _call(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None = None
    ) -> Any:
        if self._blocking is None:
            return self._run(self._core.as_agent(self.agent, self.token)._call(op, args, decode))
        self._in_flight.wait()
        result = self._blocking.call(op, self.agent, self.token, args)
        return decode(result) if decode is not None else result

    def _submit(
        self, op: str, args: dict[str, Any], decode: Callable[[Any], Any] | None
    ) -> concurrent.futures.Future[Any]:
        if self._loop.is_closed():
            raise HivememError("client is closed")
        core = self._core.as_agent(self.agent, self.token)
        future = asyncio.run_coroutine_threadsafe(core._call(op, args, decode), self._loop)
        self._in_flight.add(future)
        return future

    def number_requests_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ... (see ``AsyncMemoryClient``)."""
        self._core.number_requests_from(start)

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
        """A handle on the same connection that acts as ``agent``."""
        handle = object.__new__(MemoryClient)
        handle._loop, handle._thread, handle._core = self._loop, self._thread, self._core
        handle._blocking, handle._in_flight = self._blocking, self._in_flight
        handle.agent, handle.token = agent, token
        return handle

    def close(self) -> None:
        """Close the connection and stop the loop thread; a second call does nothing."""

        async def shutdown() -> None:
            self._core.close()

        if self._loop.is_closed():
            return
        if self._blocking is not None:
            self._blocking.close()
        self._run(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

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


def _blocking_for(core: Any) -> _BlockingTransport | None:
    """The blocking transport of a one-address core, sharing its ids; None if sharded."""
    if not isinstance(core, AsyncMemoryClient):
        return None
    transport = core._transport
    return _BlockingTransport(transport.requests, transport.curve)


async def _make_async(
    address: str | Sequence[str], agent: str, token: str, kw: dict[str, Any]
) -> Any:
    from hivemem.memory_bus.sharding import AsyncShardedClient, split_addresses

    addresses = split_addresses(address)
    if len(addresses) == 1:
        return AsyncMemoryClient(addresses[0], agent, token, **kw)
    return AsyncShardedClient(addresses, agent, token, **kw)
