"""Requests handed to a bus server in this process: no socket, no thread hop.

:class:`LocalTransport` implements :class:`~hivemem.memory_bus.interfaces.Transport` as
the socket transports of :mod:`hivemem.memory_bus.transport` do, with the same ids and
frames (:class:`~hivemem.memory_bus.requests._Requests`), for callers in the server's own
process; its events still come over the event socket.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.protocol import HEADER
from hivemem.memory_bus.requests import _Requests, check_curve
from hivemem.memory_bus.sockets import client_context, subscribed

if TYPE_CHECKING:
    from hivemem.memory_bus.server import BusServer


class LocalTransport:
    """Requests handed to a bus server in this process: no socket, no thread hop.

    A request still travels as the protocol's frames, so the server decodes,
    authenticates, checks and journals it exactly as one that came over the socket, in
    the caller's thread (``BusServer.handle`` waits while the owner thread serves a
    request and holds the next one off meanwhile). For callers in the server's own
    process: RL episodes run their agent hosts and their bus this way. Events still come
    over the event socket.

    Its blocking twin (:meth:`blocking`) calls the same server in the caller's thread,
    drawing its ids from the same sequence.

    Args:
        server: A started :class:`~hivemem.memory_bus.server.BusServer`.
        client_id: Who the server remembers requests under (random if None).
        curve: The keys of a client the bus lets in (:func:`~hivemem.memory_bus.sockets.curve_keys`), for the
            events of a bus that uses CURVE: its event socket hears no other.

    Raises:
        InvalidInputError: a ``curve`` that is not a map of the three keys.
    """

    def __init__(
        self,
        server: BusServer,
        client_id: int | None = None,
        curve: dict[str, bytes] | None = None,
    ) -> None:
        check_curve(curve)
        self.server, self.curve = server, curve
        # no timeout: the server answers before handle() returns
        self.requests = _Requests(f"{server.address} (in process)", None, 0, client_id)
        self._streams: set[zmq.asyncio.Socket] = set()  # event streams' SUBs still open

    @classmethod
    def at(
        cls, address: str, client_id: int | None = None, curve: dict[str, bytes] | None = None
    ) -> LocalTransport:
        """The transport to the server of this process that serves ``address``.

        Raises:
            HivememError: No server of this process serves it.
        """
        from hivemem.memory_bus.server import serving_at

        server = serving_at(address)
        if server is None:
            raise HivememError(f"no bus server of this process serves {address!r}")
        return cls(server, client_id, curve)

    async def call(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        """:meth:`call_now`, on the event loop (the server answers before it returns)."""
        return self.call_now(op, agent, token, args)

    def call_now(self, op: str, agent: str, token: str, args: dict[str, Any]) -> Any:
        """Send one request and return its result, in this thread."""
        if not self.server.serving:
            raise HivememError(f"the bus server at {self.server.address} is not serving")
        _, frames = self.requests.encode(op, agent, token, args)
        reply = self.requests.decode([HEADER, self.server.handle(frames)])
        if reply is None:  # handle() always answers with a reply: a bug if not
            raise HivememError("the bus server's answer is not a reply")
        return self.requests.outcome(reply)

    def number_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ..."""
        self.requests.number_from(start)

    def blocking(self) -> _LocalCalls:
        """Blocking calls in the caller's thread, in this transport's id sequence."""
        return _LocalCalls(self)

    def events(self, address: str, subscriptions: list[bytes]) -> AsyncGenerator[list[bytes], None]:
        """Messages on the server's event socket (over ZeroMQ, from this process).

        Raises:
            HivememError: the bus uses CURVE and this transport was given no keys (its
                SUB would never get through the handshake, and hear nothing, silently).
        """
        if self.server.curve is not None and self.curve is None:
            raise HivememError(
                f"the bus at {self.server.address} uses CURVE: its event socket lets in "
                "only the clients it holds a key of; give LocalTransport(server, "
                "curve=curve_keys(...)) one of them"
            )
        return subscribed(client_context(), address, self.curve, subscriptions, self._streams)

    def close(self) -> None:
        """Close the event sockets, if events were asked for (an event stream whose
        generator is not closed yet still holds its SUB)."""
        for sub in list(self._streams):
            sub.close(linger=0)


class _LocalCalls:
    """The blocking face of a :class:`LocalTransport` (a ``SyncTransport``)."""

    immediate = True

    def __init__(self, transport: LocalTransport) -> None:
        self.call = transport.call_now

    def close(self) -> None:
        """Nothing to release: the transport holds it all."""
