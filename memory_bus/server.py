"""The bus server: a ZeroMQ ROUTER in front of the store, an XPUB socket for events.

One owner thread holds the store and both sockets (ZeroMQ sockets are not thread-safe,
and one owner means no locks on the hot path). Every request is decoded, authenticated,
checked, applied, journaled and only then acknowledged. A request that cannot be decoded
or is refused gets an error reply; nothing a bad request does can stop the loop.

**Apply after reply.** A write whose rows go into namespaces with room (the common case:
the write policy adds every proposal and nothing is evicted) has its outcome decided once
its rows are checked and their ids allocated. The server journals it, sends the reply,
and only then stores the rows (vectors into the index: the costliest part of a batch),
before it reads the next request. Since the owner thread does nothing in between, no
request can observe the gap: anything that arrives after the reply was sent is served
after the rows are in (read-your-writes holds, for every client). The store's copy
overlaps the reply's trip instead of lengthening it (``docs/architecture.md``). Writes
that evict, and every other op, are applied before the reply. :meth:`BusServer.handle`
applies everything before it returns. Under ``fsync always`` the server commits in groups
instead (:meth:`~hivemem.memory_bus.owner_loop.OwnerLoop._serve_group`): everything is
applied before the reply, which waits for the fsync that covers the change.

The request path (decode, authenticate, answer a retry, journal, apply) lives in
:mod:`hivemem.memory_bus.dispatch`, the journal records, snapshots and recovery in
:mod:`hivemem.memory_bus.durability`, the event feed in :mod:`hivemem.memory_bus.publisher`;
the server owns one of each and decides when they run. What the owner thread does once
its sockets are bound (the poll, the batches of requests, group commit), and the binding
of an address, live in :mod:`hivemem.memory_bus.owner_loop`.

Run it embedded (``with BusServer(store) as server: ...``), standalone
(``hivemem bus serve``) or as a Ray actor (``hivemem.memory_bus.ray_actor``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import zmq
from hivemem.memory_bus.auth import AgentRegistry, new_secret, token_for
from hivemem.memory_bus.collector import COLLECTOR_PAUSE, OLD_OBJECT_FREEZER
from hivemem.memory_bus.curve import AllowedKeys, CurveConfig, secure
from hivemem.memory_bus.dispatch import Dispatcher
from hivemem.memory_bus.durability import SNAPSHOT_LOG_BYTES, Durability, RecentReplies
from hivemem.memory_bus.errors import HivememError, InvalidInputError, JournalSyncError
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.owner_loop import OwnerLoop, bind_socket
from hivemem.memory_bus.protocol import (
    ADMIN_AGENT,
    MAX_MESSAGE_BYTES,
    MAX_SUBSCRIPTION_BYTES,
    ProtocolError,
    decode_request,
    encode_error,
    request_id_of,
)
from hivemem.memory_bus.publisher import EventPublisher
from hivemem.memory_bus.row_auth import authenticate
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.topics import subscription_topic, topic_event_seq
from hivemem.memory_bus.wake import Wake

log = logging.getLogger(__name__)

_SERVING: weakref.WeakValueDictionary[str, BusServer] = weakref.WeakValueDictionary()
"""The servers of this process that are serving, by ROUTER address (:func:`serving_at`)."""


def serving_at(address: str) -> BusServer | None:
    """The server of this process serving ``address``, if one is (for
    :class:`~hivemem.memory_bus.local_transport.LocalTransport`)."""
    return _SERVING.get(address)


T = TypeVar("T")


class BusServer:
    """The memory bus service over one :class:`MemoryStore`.

    Args:
        store: The store it serves.
        host: Interface to bind (loopback by default).
        port: ROUTER port; 0 picks a free one (see :attr:`address`).
        pub_port: PUB port for events; 0 picks a free one.
        secret: Bus secret for agent tokens; random if None (tokens then die with the server).
        journal: Where acknowledged changes are logged; None keeps everything in memory.
        snapshot_every: Journal records between snapshots.
        snapshot_log_bytes: Also snapshot once the log since the last snapshot holds this
            many bytes and as many as that snapshot, as Redis rewrites its append-only
            file (0: by records only; see
            :attr:`~hivemem.memory_bus.durability.Durability.snapshot_due`).
        fork_snapshots: Write snapshots from a forked process (see
            :meth:`~hivemem.memory_bus.durability.Durability.maybe_snapshot`); False
            writes them on the owner thread, which stalls every client meanwhile.
        dedup_size: Requests remembered for idempotent retries.
        curve: Optional CURVE settings.
        metrics: Prometheus metrics; a private registry if None.
        spin_us: After answering, poll without sleeping for this many microseconds
            while requests come that close together (:class:`~.wake.BusyPoll`; lower
            single-op latency, ``docs/benchmarks.md``). It holds the GIL between polls, so
            it is off here (an embedded bus shares its process with the runner);
            ``hivemem bus serve`` spins 200 us by default.
        freeze_old_objects: While it runs, full garbage collections walk only newer
            objects (:class:`~.collector.OldObjectFreezer`, process-wide).
        event_queue: Event messages queued for each subscriber (ZeroMQ's ``SNDHWM`` on
            the event socket); past it that subscriber's newest are dropped, which it
            sees as a gap (:mod:`~hivemem.memory_bus.event_gaps`). 0: no bound.
    """

    def __init__(
        self,
        store: MemoryStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pub_port: int = 0,
        secret: bytes | None = None,
        journal: Journal | None = None,
        snapshot_every: int = 50_000,
        snapshot_log_bytes: int = SNAPSHOT_LOG_BYTES,
        fork_snapshots: bool = True,
        dedup_size: int = 100_000,
        curve: CurveConfig | None = None,
        metrics: BusMetrics | None = None,
        spin_us: int = 0,
        freeze_old_objects: bool = True,
        event_queue: int = 1000,
    ) -> None:
        if isinstance(spin_us, bool) or not isinstance(spin_us, int) or spin_us < 0:
            raise InvalidInputError("spin_us", f"expected an int >= 0, got {spin_us!r}")
        for name, value in (
            ("snapshot_every", snapshot_every),
            ("snapshot_log_bytes", snapshot_log_bytes),
            ("event_queue", event_queue),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(name, f"expected an int >= 0, got {value!r}")
        if not isinstance(freeze_old_objects, bool):
            raise InvalidInputError(
                "freeze_old_objects", f"expected a bool, got {freeze_old_objects!r}"
            )
        self.spin_s = spin_us / 1e6
        self.event_queue = event_queue
        self.freeze_old_objects, self._freezing = freeze_old_objects, False  # held: start-stop
        self.store = store
        self.host, self._port, self._pub_port = host, port, pub_port
        self.secret = secret or new_secret()
        self.registry = AgentRegistry(self.secret)
        self.journal = journal
        # Held while a request is handled and settled (see inspect).
        self._between = threading.Lock()
        self.curve = curve
        self._allowed_keys: AllowedKeys | None = None  # CURVE's, while serving
        self.metrics = metrics or BusMetrics()
        self._replies = RecentReplies(dedup_size)
        self._durability = Durability(
            journal,
            store,
            self.registry,
            self._replies,
            snapshot_every=snapshot_every,
            snapshot_log_bytes=snapshot_log_bytes,
            fork_snapshots=fork_snapshots,
        )
        self.metrics.durability.source = self._durability
        self._dispatch = Dispatcher(
            store, self.registry, self._replies, self._durability, self.metrics
        )
        # The identity of the event numbers' history: a data directory's own, kept across
        # restarts; without one, each start begins a new history (numbers from 1 again).
        self.epoch = journal.epoch() if journal is not None else secrets.token_hex(8)
        self._dispatch.info["epoch"] = self.epoch
        self._publisher = EventPublisher(
            self.metrics,
            self._authorize_subscription,
            partial(topic_event_seq, store),
            self.epoch,
        )
        # An agent registered anew may have lost topics it listens to (recheck).
        self.registry.listeners.append(self._publisher.recheck)
        self._stop = threading.Event()  # set by the owner thread, and by stop() and _fail
        # request_stop's flag: a signal handler sets it, and may not set the Event (see there).
        self._stop_asked = False
        self._waker = Wake(pipe=False)  # wakes the owner thread from its poll (start)
        self._ready = threading.Event()
        self._failure: BaseException | None = None  # why start() failed
        self.failure: JournalSyncError | None = None  # why the server stopped by itself
        self._thread: threading.Thread | None = None
        self._closed = False  # stop() closed the journal and the wake pipe
        self._registrations: list[dict[str, Any]] = []  # made before start (see register)
        self.address = ""
        self.pub_address = ""
        store.subscribe(self._publisher.events.append)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def snapshots(self) -> int:
        """Snapshots completed."""
        return self._durability.snapshots

    @property
    def admin_token(self) -> str:
        """The token of the administrator (may register agents)."""
        return token_for(self.secret, ADMIN_AGENT)

    def token(self, agent_id: str) -> str:
        """The token of ``agent_id`` under this server's secret."""
        return token_for(self.secret, agent_id)

    def register(
        self, agent_id: str, groups: list[str] | frozenset[str] = frozenset(), role: str = "agent"
    ) -> str:
        """Register an agent before start (after start, use the ``register`` op); returns its token.

        With a journal, the registration is applied at start, once the data directory is
        recovered, as the admin's ``register`` request (unless the agent was recovered
        with the same groups and role): the journal keeps it, so a restart replays the
        requests that needed it (a group's writes) with it, and a replay of older
        requests sees the registry as it was then.

        Raises:
            InvalidInputError: An id that is not a non-empty str, groups that are not
                strs, a role that is not a str (checked now, not at start).
        """
        if self._thread is not None:
            raise HivememError("register agents through the 'register' op once the server runs")
        if not isinstance(agent_id, str) or not agent_id:
            raise InvalidInputError("agent_id", f"expected a non-empty str, got {agent_id!r}")
        if isinstance(groups, str) or not all(isinstance(g, str) for g in groups):
            raise InvalidInputError("groups", f"expected a list of str, got {groups!r}")
        if not isinstance(role, str):
            raise InvalidInputError("role", f"expected a str, got {role!r}")
        if self.journal is None:
            return self.registry.register(agent_id, groups, role)
        self._registrations.append({"agent_id": agent_id, "groups": sorted(groups), "role": role})
        return self.token(agent_id)

    def start(self, timeout: float | None = 30.0) -> BusServer:
        """Recover from the journal, bind, and serve on the owner thread; returns once bound.

        ``timeout``: seconds to wait for the recovery and the binding (None: no limit).

        A server starts once. Stopped (or failed to start), it has closed its journal
        and its stop cannot be taken back: a second start returned at once and served
        nothing, its owner thread ending on the first run's stop. Make a new one over the
        same store (and a journal opened anew) instead.

        Raises:
            HivememError: It did not start within ``timeout``, or failed to (recovery,
                binding), or was started before.
        """
        if self._thread is not None:
            if self.serving:
                raise HivememError("this BusServer is already started")
            raise HivememError("a stopped BusServer cannot be started again; make a new one")
        self._waker = Wake()  # stop() and handle() wake the owner thread with it
        self._thread = threading.Thread(target=self._run, name="hivemem-bus", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise HivememError(f"bus server did not start within {timeout} s")
        if self._failure is not None:
            self._waker.close()
            raise HivememError(f"bus server failed to start: {self._failure}") from self._failure
        _SERVING[self.address] = self
        if self.freeze_old_objects and not self._freezing:
            OLD_OBJECT_FREEZER.hold()
            self._freezing = True
        self.metrics.watch_collector()  # after the freezer: its work is part of a pause
        return self

    @property
    def owner_thread_id(self) -> int | None:
        """The kernel's id of the owner thread (as ``top -H`` and ``/proc/<pid>/task``
        show it), to account the CPU the store's requests take; None before start."""
        return None if self._thread is None else self._thread.native_id

    @property
    def serving(self) -> bool:
        """Whether the server is started and not yet asked to stop."""
        if self._thread is None or not self._thread.is_alive():
            return False
        return not (self._stop.is_set() or self._stop_asked)

    def stop(self) -> None:
        """Stop serving, close sockets and the journal (at once: the owner thread is woken)."""
        self.request_stop()
        if _SERVING.get(self.address) is self:
            del _SERVING[self.address]
        if self._thread is not None:
            self._thread.join()
        # Under the lock handle() holds: a caller that passed LocalTransport's serving
        # check just before the stop finds the server closed (handle), instead of
        # appending to a closed journal or waking a pipe whose fd may be reused by now.
        with self._between:
            self._closed = True
            if self.journal is not None:
                self.journal.close()
            self._waker.close()
        self.metrics.unwatch_collector()
        if self._freezing:
            OLD_OBJECT_FREEZER.release()
            self._freezing = False

    def reload_curve_keys(self) -> tuple[int, list[str]]:
        """Read the allowed clients' public keys (CURVE) again: a key taken out of the
        folder is refused from the next connection on, and one put in is let in.
        Connections made before stay until they close (ZeroMQ checks a key once, when a
        peer connects). ``hivemem bus serve`` calls this on SIGHUP.

        Returns:
            How many client keys are allowed now, and the ``*.key`` files that could not
            be read (no client gets in by them).

        Raises:
            HivememError: this bus does not use CURVE, or is not serving.
            ConfigError: the folder of keys is gone (the keys read before stay).
        """
        allowed = self._allowed_keys
        if allowed is None:
            raise HivememError("this bus does not use CURVE, or is not serving")
        unreadable = allowed.read()
        return len(allowed.keys), unreadable

    def request_stop(self) -> None:
        """Ask the server to stop; :meth:`serve_forever` returns.

        Safe from a signal handler (``hivemem bus serve`` calls it on SIGTERM): it sets a
        flag and wakes the owner thread through a pipe, and takes no lock. A handler runs
        in the main thread, between two bytecodes of whatever that thread was doing, and
        :meth:`serve_forever`'s wait holds the stop Event's lock for a few of them each
        second: setting the Event there waited for a lock its own thread held, for ever,
        and the server never stopped. The owner thread sets the Event once it sees the flag.
        """
        self._stop_asked = True
        self._waker.wake()

    def serve_forever(self) -> None:
        """Start (unless started) and block until :meth:`request_stop` or Ctrl-C.

        Raises:
            HivememError: the server stopped by itself (:attr:`failure`: an fsync failed).
        """
        if self._thread is None:
            self.start()
        try:
            while not (self._stop.wait(1.0) or self._stop_asked):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        if self.failure is not None:
            raise self.failure

    def __enter__(self) -> BusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- owner thread -------------------------------------------------------------------

    def _run(self) -> None:
        ctx = zmq.Context()
        auth = None
        try:
            self._recover()
            self._dispatch.register_all(self._registrations, self.admin_token)
            self._registrations.clear()
            # before any request: an eviction counted before the first refresh had no
            # policy to its name (the in-process path answers as soon as start returns)
            self.metrics.name_policies(self.store)
            router, pub, auth = self._bind(ctx)
        except BaseException as exc:  # reported to start(), which raises it
            self._failure = exc
            self._ready.set()
            ctx.term()
            return
        self._ready.set()
        try:
            OwnerLoop(self).run(router, pub)
        finally:
            router.close(linger=0)
            pub.close(linger=0)
            self._allowed_keys = None
            if auth is not None:
                auth.stop()
            ctx.term()

    def _bind(self, ctx: zmq.Context[Any]) -> tuple[zmq.Socket[Any], zmq.Socket[Any], Any]:
        router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 4096)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        pub.setsockopt(zmq.XPUB_MANUAL, 1)  # the server decides who gets which events
        pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)  # subscriptions are small
        pub.setsockopt(zmq.SNDHWM, self.event_queue)
        auth = None
        try:
            if self.curve is not None:
                auth, self._allowed_keys = secure(ctx, self.curve, router, pub)
            self.address = bind_socket(router, self.host, self._port, "requests")
            self.pub_address = bind_socket(pub, self.host, self._pub_port, "events")
        except BaseException:
            # Before the context is terminated: the authenticator's thread, left running,
            # failed on the terminated context with a traceback of its own.
            router.close(linger=0)
            pub.close(linger=0)
            if auth is not None:
                auth.stop()
            raise
        self._dispatch.info["pub"] = self.pub_address
        return router, pub, auth

    def _fail(self, exc: JournalSyncError, withheld: int = 0) -> None:
        """Stop serving after a failed fsync: the events of changes nobody was told of are
        dropped, and every later request is refused (:meth:`handle`) until the loop ends."""
        if self.failure is None:
            log.critical(
                "the bus stops: %s (%d replies withheld); restart it, and the log replays "
                "what the disk holds",
                exc.message,
                withheld,
            )
            self.failure = exc
        self._publisher.events.clear()
        self._stop.set()
        self._waker.wake()

    def _authorize_subscription(self, agent: str, token: str, topic: str) -> bytes:
        """The event-socket prefix of a subscription, checked as a request would be."""
        caller = authenticate(self.registry, self._dispatch.verified, agent, token)
        return subscription_topic(self.store, self.registry, caller, topic)

    # --- requests -----------------------------------------------------------------------

    def handle(self, frames: list[bytes]) -> bytes:
        """The reply payload for one request's frames (after the ROUTER identity).

        The request is wholly applied when this returns (nothing is left for later).
        Safe to call from any thread while the server runs (see :meth:`inspect`). The
        events it caused go out on the event socket, and a snapshot it made due is
        forked, from the owner thread, which this wakes when there is either to do: the
        socket is the owner thread's alone, and a snapshot writer dies with the thread
        that forked it.
        """
        with COLLECTOR_PAUSE, self._between:
            if self._closed:
                return encode_error(
                    request_id_of(frames),
                    HivememError.code,
                    f"the bus server at {self.address} has stopped; nothing was applied",
                )
            if self.failure is not None:  # what it would show may not be on the disk
                self.metrics.request(_op_of(frames), self.failure.code, 0.0)
                return encode_error(
                    request_id_of(frames),
                    self.failure.code,
                    f"the bus has stopped: {self.failure.message}",
                    self.failure.details,
                )
            started = time.perf_counter()
            reply, later = self._dispatch.handle(frames)
            self._dispatch.settle(later, snapshot=False)
            journal = self.journal
            if journal is not None and journal.sync_failure is not None:
                self._fail(journal.sync_failure)  # refused, unapplied; nothing more is taken
            elif self._publisher.set_aside() or self._durability.snapshot_due:
                self._waker.wake()
            self.metrics.busy.seconds += time.perf_counter() - started
        return reply

    def inspect(self, read: Callable[[MemoryStore], T]) -> T:
        """``read(store)``, run between two requests: the way to look at the store directly.

        The owner thread changes the store while it serves, and a write's rows enter it
        just after its reply (module docstring), so a thread that reads ``self.store``
        while the server runs may see half a request, or miss a write whose reply has
        already arrived. ``inspect`` waits until no request is being handled and holds
        the owner thread off while ``read`` runs: every write answered before the call
        is in. Keep ``read`` short (the bus waits for it) and return copies; never call
        it from the owner thread itself (a handler), which holds the lock.
        """
        with self._between:
            return read(self.store)

    def _recover(self) -> None:
        """Load the snapshot and replay the journal; the replay's events are not published.

        The collector is held off meanwhile: everything recovered is kept, and a full
        collection in the middle would walk the store recovered so far (a fifth of a
        recovery's time).
        """
        started = time.monotonic()
        with COLLECTOR_PAUSE:
            self._durability.recover()
        self.metrics.durability.recovery_seconds = time.monotonic() - started
        self._publisher.events.clear()


def _op_of(frames: list[bytes]) -> str:
    """The op a request names, or "invalid" (its label on the request counter)."""
    try:
        return decode_request(frames).op.value
    except ProtocolError:
        return "invalid"
