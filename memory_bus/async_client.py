"""The asyncio client of the bus: many requests in flight on one DEALER, matched by id.

:class:`AsyncMemoryClient` is the one core; :class:`~hivemem.memory_bus.client.MemoryClient`
runs it on a private event loop thread. Users import both from
:mod:`hivemem.memory_bus.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.event_gaps import EventGaps, starts
from hivemem.memory_bus.interfaces import Transport
from hivemem.memory_bus.ops import AsyncClosing, Ops, name_list
from hivemem.memory_bus.protocol import HEADER, MARK, encode_subscription, unpack_reply
from hivemem.memory_bus.transport import MAX_IN_FLIGHT, AsyncTransport, check_request_start

RECHECK_S = 5.0
"""How long an event stream waits without a message before it asks the bus (``subscribe``)
whether it still publishes at the same address, in the same epoch."""

_ANY_HOST = re.compile(r"tcp://(0\.0\.0\.0|\*|\[::\]|::):(\d+)")
_HOST = re.compile(r"tcp://(.+):\d+")


def reachable_pub(pub: str, requests: str) -> str:
    """The event socket's address as a client that sends its requests to ``requests``
    can reach it.

    A bus bound to every interface (``--host 0.0.0.0``) reports its event socket there,
    an address that names no host: a subscriber on another machine connected to itself
    and heard nothing, without a word. The host that answers the requests serves the
    events too.

    >>> reachable_pub("tcp://0.0.0.0:7778", "tcp://10.0.0.5:7777")
    'tcp://10.0.0.5:7778'
    """
    anywhere, host = _ANY_HOST.fullmatch(pub), _HOST.fullmatch(requests)
    if anywhere is None or host is None:
        return pub
    return f"tcp://{host.group(1)}:{anywhere.group(2)}"


class AsyncMemoryClient(Ops, AsyncClosing):
    """The asyncio client: every op method returns a coroutine (``async with`` closes it).

    Args:
        address: The server's ROUTER address (``tcp://host:port``).
        agent: Default agent id for requests (see :meth:`as_agent`).
        token: That agent's token.
        timeout: Seconds to wait for one reply before retrying (> 0); None waits for ever.
        retries: Retries after a timeout (each with the same request id), an int >= 0.
        curve: ``{"public", "secret", "server"}`` z85 keys for CURVE, or None.
        client_id: Who the server remembers requests under (random if None). A process
            that replays requests after a crash passes the same id and numbers its
            requests as before (:meth:`number_requests_from`), so the server answers
            the replayed writes from memory instead of applying them again.
        max_in_flight: Requests in flight at once at most, an int >= 1; a call beyond
            them waits for one to be answered before it is sent (backpressure). The bus
            remembers each agent's last ``dedup_size // 10`` replies (10,000 by
            default) to answer a resent write from memory: keep this well below that,
            or a write resent after a stall can be applied twice.
        transport: What carries the requests, instead of a DEALER to ``address`` (e.g.
            :class:`~hivemem.memory_bus.local_transport.LocalTransport`); the five settings
            above are then the transport's own.

    Raises:
        InvalidInputError: a ``timeout``, ``retries``, ``curve`` or ``max_in_flight``
            that cannot work.
    """

    def __init__(
        self,
        address: str = "",
        agent: str = "",
        token: str = "",
        *,
        timeout: float | None = 10.0,
        retries: int = 2,
        curve: dict[str, bytes] | None = None,
        client_id: int | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        transport: Transport | None = None,
    ) -> None:
        one_of(address, transport)
        self.agent, self.token = agent, token
        self._transport: Transport = transport or AsyncTransport(
            address, timeout, retries, curve, client_id, max_in_flight
        )
        self._owner = True  # closes the transport; its as_agent handles do not

    def number_requests_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ... (see ``client_id``).

        Only the client that owns the connection may: an :meth:`as_agent` handle that
        renumbered it made its owner's later requests reuse ids, answered from the bus's
        memory of older requests and never applied.

        Raises:
            InvalidInputError: ``start`` is not an int in [0, 2**64) (the wire's ids).
            HivememError: called on an :meth:`as_agent` handle, or with requests in
                flight (one renumbered onto an id in flight would take its reply).
        """
        if not self._owner:
            raise HivememError(
                "an as_agent handle cannot renumber the requests of the connection it "
                "shares: renumber them on the client that made it"
            )
        self._transport.number_from(check_request_start(start))

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
        """Memory events (add/update/delete/evict, graph edges) of ``topics``, as decoded maps.

        A topic is one namespace, ``"tier/namespace"``, which this agent must be allowed
        to read; the admin may also name a whole tier (``"tier/"``) or everything
        (``""``). The server checks the topics first (``subscribe``; a refused one raises
        here, e.g. :class:`~hivemem.memory_bus.errors.AccessDeniedError`), then the event
        socket checks each subscription again: nobody receives what they could not read.
        The event socket's address comes from that answer unless given.

        Each event carries its namespace's sequence number (``seq``). Where numbers were
        skipped (events dropped for a slow subscriber, or sent while it reconnected), or
        went back (the bus lost its memory), a ``{"kind": "gap", ...}`` record comes
        first (:mod:`hivemem.memory_bus.event_gaps`): read the namespace afresh.

        After :data:`RECHECK_S` without a message the stream asks the bus again
        (``subscribe``): a bus restarted on another event port, or in another epoch, is
        followed to its new address, after a gap of unknown size for every namespace
        counted so far (a SUB left at the old port heard nothing more, ever, unwarned).

        Raises:
            InvalidInputError: ``topics`` is a str, not a list of them.
        """
        topics = name_list(topics, "topics")
        granted = await self.subscribe(topics)
        address = self._pub_of(granted, pub_address)
        epoch = granted.get("epoch")
        gaps = EventGaps(
            starts(topics, granted.get("seqs")), epoch if isinstance(epoch, str) else None
        )
        while True:
            # closed with this stream, not when collected: its socket must be closed before
            # the transport's context is terminated, or the termination waits for ever
            feed = self._transport.events(address, self._subscriptions(topics, granted))
            async with (
                contextlib.aclosing(feed),
                contextlib.aclosing(self._records(feed, gaps)) as records,
            ):
                async for record in records:
                    if record is None:  # quiet: does the bus still publish there?
                        moved = await self._moved(topics, address, gaps, pub_address)
                        if moved is not None:
                            granted, address, told = moved
                            for gap in told:
                                yield gap
                            break
                        continue
                    yield record
                else:
                    return

    def _pub_of(self, granted: dict[str, Any], pub_address: str | None) -> str:
        return pub_address or reachable_pub(granted["pub"], getattr(self._transport, "address", ""))

    def _subscriptions(self, topics: list[str], granted: dict[str, Any]) -> list[bytes]:
        subscriptions = []
        for topic, prefix in zip(topics, granted["prefixes"], strict=True):
            # The first asks the server for the topic's events; the second lets this
            # socket keep them (a SUB drops messages that match none of its own prefixes).
            subscriptions += [encode_subscription(self.agent, self.token, topic), prefix]
        return subscriptions

    @staticmethod
    async def _records(
        feed: AsyncIterator[list[bytes]], gaps: EventGaps
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The gaps and events of ``feed``'s messages, and None after each
        :data:`RECHECK_S` without one (the message awaited meanwhile is kept)."""
        following: asyncio.Future[list[bytes]] | None = None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(anext(feed))
                done, _ = await asyncio.wait({following}, timeout=RECHECK_S)
                if not done:
                    yield None
                    continue
                try:
                    frames = following.result()
                except StopAsyncIteration:
                    return
                following = None
                if len(frames) == 3 and frames[1] == HEADER:
                    # the bus's own message, under the size limit alone: deleting a node of
                    # 65,600 edges announces 65,601 events at once (unpack's request-side
                    # limits ended the stream, and every event after it was lost)
                    for record in unpack_reply(frames[2]):
                        for gap in gaps.gaps_before(record):
                            yield gap
                        if record.get("kind") != MARK:
                            yield record
        finally:
            if following is not None and not following.done():
                following.cancel()
                with contextlib.suppress(BaseException):
                    await following

    async def _moved(
        self, topics: list[str], address: str, gaps: EventGaps, pub_address: str | None
    ) -> tuple[dict[str, Any], str, list[dict[str, Any]]] | None:
        """The bus's new grant, event address and the gaps to tell, if it now publishes
        elsewhere or in another epoch (a bus restarted on another event port: the SUB
        waited at the old one, silent for ever); None if not, or if the bus cannot say."""
        try:
            granted = await self.subscribe(topics)
        except HivememError:
            return None  # away, or refusing now: the stream waits on, and asks again
        now_at, epoch = self._pub_of(granted, pub_address), granted.get("epoch")
        new_epoch = isinstance(epoch, str) and epoch != gaps.epoch
        if now_at == address and not new_epoch:
            return None
        # A mark of the new epoch: every namespace counted so far gets a gap of unknown
        # size. In the same epoch (a bus with a data directory, moved), the numbers go
        # on, and the new subscription's first marks tell what was missed.
        told = gaps.gaps_before({"kind": MARK, "epoch": epoch}) if new_epoch else []
        return granted, now_at, told

    def as_agent(self, agent: str, token: str) -> AsyncMemoryClient:
        """A handle on the same connection that acts as ``agent``.

        The connection stays this client's: closing the handle (or leaving its ``async
        with``) does nothing, so a handle lent to one agent cannot end everybody's.
        """
        handle = object.__new__(AsyncMemoryClient)
        handle.agent, handle.token, handle._transport = agent, token, self._transport
        handle._owner = False
        return handle

    def close(self) -> None:
        """Close the socket (call from the loop that used it); on an :meth:`as_agent`
        handle, nothing."""
        if self._owner:
            self._transport.close()


def one_of(address: str | Sequence[str], transport: Transport | None) -> None:
    """Raise ``ValueError`` unless exactly one of an address and a transport is given."""
    if (transport is None) == (not address):
        raise ValueError("give either the server's address or a transport (one of the two)")
