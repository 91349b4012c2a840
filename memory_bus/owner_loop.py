"""The owner thread's serving loop: its poll, its batches of requests, and group commit.

:class:`~hivemem.memory_bus.server.BusServer` builds the store's collaborators, binds the
sockets, and starts and stops the owner thread; :class:`OwnerLoop` is what that thread
does between the binding and the stop: it polls the sockets, answers the requests waiting
(in groups under ``fsync always``), sends events and marks, and refreshes the gauges. It is
kept apart from the server's lifecycle because it is the hot path: every request that
comes through the ROUTER socket is read, handled and answered in :meth:`OwnerLoop._serve_batch`
or :meth:`OwnerLoop._serve_group`, and nowhere else.

The loop shares the server's lock and collaborators, taken once when the thread starts, so
that a request reads them as directly as it did when the loop was part of the server; it
reads the server's :attr:`~hivemem.memory_bus.server.BusServer.failure` from the server
itself, which either thread may set. :func:`bind_socket`, which the server binds both
sockets with before the loop starts, is here with the rest of the owner thread's socket
handling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
from hivemem.memory_bus.collector import COLLECTOR_PAUSE
from hivemem.memory_bus.durability import SNAPSHOT_WAIT_S
from hivemem.memory_bus.errors import HivememError, JournalSyncError
from hivemem.memory_bus.pages import idle_prefaulter
from hivemem.memory_bus.protocol import HEADER
from hivemem.memory_bus.publisher import MARK_PERIOD_S
from hivemem.memory_bus.wake import BusyPoll
from zmq.utils.monitor import recv_monitor_message

if TYPE_CHECKING:
    from hivemem.memory_bus.server import BusServer

POLL_MS = 100
GROUP_MAX = 64
"""Most requests one fsync covers under ``fsync always`` (see :meth:`OwnerLoop._serve_group`):
the first of a group waits for the others to be handled before its reply is sent."""
GAUGE_PERIOD_S = 1.0
"""How often the owner thread refreshes the store's gauges, at least."""
GAUGE_SHARE = 0.01
"""Most of the owner thread's time that refreshing the gauges may take (a pass over every
namespace: 78 ms for 100,000 here, so a store that large refreshes them every 7.8 s)."""


class OwnerLoop:
    """What the owner thread of ``server`` does once its sockets are bound, until it stops.

    Made on the owner thread when it starts (the server's wake-up is made by then).
    """

    def __init__(self, server: BusServer) -> None:
        self._server = server
        self.store, self.metrics, self.journal = server.store, server.metrics, server.journal
        self.spin_s = server.spin_s
        self._between = server._between
        self._dispatch = server._dispatch
        self._durability = server._durability
        self._publisher = server._publisher
        self._stop = server._stop
        self._waker = server._waker

    def run(self, router: zmq.Socket[Any], pub: zmq.Socket[Any]) -> None:
        """Serve on ``router`` and ``pub`` until the server is asked to stop, or fails."""
        monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(pub, zmq.POLLIN)  # subscriptions arrive here
        waker = self._waker  # start() made it before this thread
        poller.register(waker.fd, zmq.POLLIN)  # stop() and handle() wake the loop
        next_gauges = next_marks = 0.0
        spin = BusyPoll(self.spin_s, idle=idle_prefaulter())  # faults pages its writes will need
        try:
            while not (self._stop.is_set() or self._server._stop_asked):
                with self._between:  # handle() may be journaling meanwhile
                    self._durability.reap_snapshot()
                ready = dict(poller.poll(spin.timeout_ms(POLL_MS)))
                if router in ready:
                    spin.arrived()
                    self._serve_batch(router, pub)
                    spin.answered()
                if self._server.failure is not None:  # an fsync failed: nothing more goes out
                    break
                if monitor in ready:
                    self._count_connections(monitor)
                if pub in ready:
                    with self._between:  # checked against the registry handle() may change
                        self._publisher.take_subscriptions(pub)
                if waker.fd in ready:  # stop(), or what requests handle() answered left
                    waker.clear()
                    self._after_handled(pub)
                now = time.monotonic()
                if now >= next_marks:
                    next_marks = now + MARK_PERIOD_S
                    with self._between:  # handle() may be setting events aside meanwhile
                        self._publisher.send_marks(pub, now)
                if now >= next_gauges:
                    started = time.monotonic()
                    self._observe_store()
                    spent = time.monotonic() - started
                    next_gauges = started + max(GAUGE_PERIOD_S, spent / GAUGE_SHARE)
        finally:
            self._stop.set()  # serve_forever waits on it (request_stop, a handler, cannot set it)
            try:  # before this thread ends: the writer dies with the thread that forked it
                self._durability.reap_snapshot(wait=SNAPSHOT_WAIT_S)
                self._observe_store()  # the last word on the gauges
            finally:  # an open socket would keep ctx.term() in _run waiting for ever
                router.disable_monitor()
                monitor.close(linger=0)

    def _observe_store(self) -> None:
        """Refresh the gauges, between requests: :meth:`~hivemem.memory_bus.server.BusServer.handle`
        may be changing the store from another thread (a walk over the namespaces while one
        was added raised)."""
        with self._between:
            self.metrics.observe_store(self.store)

    def _after_handled(self, pub: zmq.Socket[Any]) -> None:
        """Send the events of requests :meth:`~hivemem.memory_bus.server.BusServer.handle`
        answered; snapshot if they made one due."""
        with self._between:
            if self._server.failure is not None:
                return
            self._publisher.publish(pub)
            self._durability.maybe_snapshot()
            journal = self.journal
            if journal is not None and journal.sync_failure is not None:
                self._server._fail(journal.sync_failure)

    def _count_connections(self, monitor: zmq.Socket[Any]) -> None:
        while monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            self.metrics.clients.inc(1 if event == zmq.EVENT_ACCEPTED else -1)

    def _serve_batch(self, router: zmq.Socket[Any], pub: zmq.Socket[Any]) -> None:
        """Answer every request waiting now (up to a bound, so stop stays responsive)."""
        if self._durability.commits_in_groups:
            for _ in range(1024 // GROUP_MAX):
                if not self._serve_group(router, pub):
                    return
            return
        busy, dispatch = self.metrics.busy, self._dispatch
        for _ in range(1024):
            started = time.perf_counter()
            frames = _waiting(router)
            if frames is None:
                return
            with COLLECTOR_PAUSE, self._between:
                reply, later = dispatch.handle(frames[1:])
                router.send_multipart([frames[0], HEADER, reply])
                dispatch.settle(later)
                self._publisher.publish(pub)
                busy.seconds += time.perf_counter() - started

    def _serve_group(self, router: zmq.Socket[Any], pub: zmq.Socket[Any]) -> bool:
        """Group commit (``fsync always``): handle up to :data:`GROUP_MAX` of the requests
        waiting, applying each before the next is read, journal their changes unsynced,
        fsync once, and only then send the replies and events. Returns whether the group
        was full (more may be waiting).

        Nothing leaves the server before the fsync of a change it shows: not a reply, not
        an event, nor a read's answer that saw another request's change. A reply sent
        before any change of the group was logged (a read at its head) leaves at once.
        A snapshot the group made due starts after the fsync. If the fsync fails, nothing
        more is sent and the server stops
        (:attr:`~hivemem.memory_bus.server.BusServer.failure`): the changes are applied in
        memory and it is unknown which reached the disk, so none may be acknowledged.
        Their clients' retries, against the restarted server, are answered from what the
        disk held: by the remembered reply where the change was there, by applying it
        where not.
        """
        busy, dispatch, durability = self.metrics.busy, self._dispatch, self._durability
        held: list[list[bytes]] = []  # replies that wait for the fsync
        counts: list[Callable[[], None]] = []  # and their requests' counts
        served = 0
        with COLLECTOR_PAUSE, self._between:
            durability.deferring = True
            try:
                while served < GROUP_MAX:
                    started = time.perf_counter()
                    frames = _waiting(router)
                    if frames is None:
                        break
                    served += 1
                    count: list[Callable[[], None]] = []
                    reply, later = dispatch.handle(frames[1:], count)
                    dispatch.settle(later, snapshot=False)
                    if durability.uncommitted:
                        held.append([frames[0], HEADER, reply])
                        counts.extend(count)
                    else:  # it saw no change that awaits the fsync
                        router.send_multipart([frames[0], HEADER, reply])
                        for done in count:
                            done()
                    busy.seconds += time.perf_counter() - started
            finally:
                durability.deferring = False
            started = time.perf_counter()
            try:
                durability.commit()
            except JournalSyncError as exc:
                self._server._fail(exc, withheld=len(held))
                return False
            # Counted first: a client that has its reply finds its request counted (a
            # test reading the metrics right after the reply lost that race now and then).
            for done in counts:
                done()
            for parts in held:
                router.send_multipart(parts)
            self._publisher.publish(pub)
            durability.maybe_snapshot()
            if self.journal is not None and self.journal.sync_failure is not None:
                self._server._fail(self.journal.sync_failure)  # the snapshot's fsyncs
            busy.seconds += time.perf_counter() - started
        return served == GROUP_MAX


def _waiting(router: zmq.Socket[Any]) -> list[bytes] | None:
    """The frames of the next request waiting (identity first), or None if none is;
    messages with nothing to reply to (no frame after the identity) are dropped, up to a
    bound, so that a flood of them cannot hold the owner thread."""
    for _ in range(1024):
        try:
            frames = router.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None
        if len(frames) >= 2:
            return frames
    return None


def bind_socket(sock: zmq.Socket[Any], host: str, port: int, what: str) -> str:
    """Bind ``sock`` to ``host`` (an IPv6 address too: ``::1``, or ``[::1]``) at ``port``
    (0: any free one); the address clients connect to.

    Raises:
        HivememError: the address cannot be had; the message says which socket (``what``:
            "requests" or "events"), as "Address already in use" alone did not.
    """
    host = host.removeprefix("[").removesuffix("]")
    if ":" in host:  # ZeroMQ takes IPv6 only when told, and the address in brackets
        sock.setsockopt(zmq.IPV6, 1)
        host = f"[{host}]"
    try:
        if port:
            address = f"tcp://{host}:{port}"
            sock.bind(address)
            return address
        chosen = sock.bind_to_random_port(f"tcp://{host}")
    except zmq.ZMQError as exc:
        raise HivememError(
            f"cannot bind the {what} socket to tcp://{host}:{port}: {exc.strerror}"
        ) from None
    return f"tcp://{host}:{chosen}"
