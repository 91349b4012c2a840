"""The bus server's event feed: the store's events, sent per topic on an XPUB socket.

A store reports every write, update and eviction to its subscribers; the server queues
them in an :class:`EventPublisher` and, once a request is answered, publishes those the
request caused, on their namespace's topic
(:func:`~hivemem.memory_bus.protocol.event_topic`; frames in ``docs/protocol.md``). Its
owner thread makes every call, on the socket it owns.

Nobody receives events they could not read. The XPUB runs in manual mode: ZeroMQ hands
every subscription to the server instead of acting on it, and the server subscribes the
subscriber only to topics whose subscription carries an agent, its token and a topic
that agent may read (:func:`~hivemem.memory_bus.protocol.encode_subscription`). A bare
subscription (a SUB socket that only names a topic) is ignored, so it receives nothing.

Access can shrink while a subscription lives (the admin registers an agent again, with
fewer groups), and the server can subscribe or unsubscribe a peer only right after
reading that peer's subscription: ZeroMQ offers no way to reach a peer later. So an
agent's subscription is *keyed*: the server subscribes the peer to the signed
subscription itself, which the peer's SUB also keeps as a filter, and sends the topic's
events once on each such key (the event's topic is the key). When the agent's
registration changes, its keys are checked again; the server stops sending on those it
may no longer read, and starts again if it may once more. The admin may read everything
for good, so its subscriptions keep the plain topics (one message reaches all of them):
a namespace's topic, a tier's ``tier/``, and every tier's for ``""`` (a plain ``""``
would match the keyed messages too).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.interfaces import MemoryEvent
from hivemem.memory_bus.item import TierName
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.protocol import (
    ADMIN_AGENT,
    HEADER,
    MARK,
    TOPIC_END,
    decode_subscription,
    event_topic,
    pack,
    wire_topic,
)

log = logging.getLogger(__name__)

_WARN_AT_MOST = 1_000  # distinct bare prefixes logged, at most

MARK_PERIOD_S = 1.0
"""How often the marks of the namespaces that changed lately go out."""

MARK_WINDOW_S = 30.0
"""How long after a namespace's last event its mark is still sent."""

MARKS_PER_MESSAGE = 1_000
"""Marks sent together to the subscribers of a whole tier, at most (one message)."""

Authorize = Callable[[str, str, str], bytes]
"""``authorize(agent, token, topic)``: the topic's prefix on the event socket, or raise."""

LastSeq = Callable[[str], "tuple[str, str, int] | None"]
"""``last_seq(topic)``: (tier, namespace, last event number) of a one-namespace topic."""

_EVERY_TIER = tuple(tier.value.encode() for tier in TierName)
"""What the admin's ``""`` listens on: each tier's name, which starts the topics of its
namespaces and its own (``tier/``) but no agent's key (``HEADER`` first). No tier's name
starts another's, nor is it ``tier/``: ZeroMQ keeps one entry per peer and prefix, so
an unsubscription from ``""`` must not undo a ``"tier/"`` the same peer holds."""


@dataclass(frozen=True)
class Grant:
    """A signed subscription the server acted on.

    Attributes:
        agent: Whose it is.
        token: The agent's token (checked again when the agent's registration changes).
        topic: The topic as the subscriber named it: ``"tier/namespace"``, ``"tier/"``, ``""``.
        prefix: The topic's prefix (:func:`~hivemem.memory_bus.protocol.wire_topic`).
        keyed: Whether its events go out on the signed subscription itself (an agent's)
            rather than on the plain topic (the admin's); see the module docstring.
    """

    agent: str
    token: str
    topic: str
    prefix: bytes
    keyed: bool


class EventPublisher:
    """The events of the requests a server answers, and the topics someone listens to.

    Args:
        metrics: Where every event is counted.
        authorize: Checks a subscription (token and access) and gives its prefix.
        last_seq: A namespace topic's last event number (for a new subscriber's mark).
        epoch: The history the event numbers belong to, carried by every mark.

    Attributes:
        events: The store's events not yet published (the server subscribes
            ``events.append`` to its store).
    """

    def __init__(
        self,
        metrics: BusMetrics,
        authorize: Authorize,
        last_seq: LastSeq | None = None,
        epoch: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.authorize = authorize
        self.last_seq = last_seq
        self.epoch = epoch
        self.events: list[MemoryEvent] = []
        # Signed subscriptions held, by payload, and by how many peers (several SUBs of
        # one agent send the same one); their prefixes, the subscribers' own filters.
        self._grants: dict[bytes, Grant] = {}
        self._held: Counter[bytes] = Counter()
        self._filters: Counter[bytes] = Counter()
        # An agent's: namespace topic -> the keys its events go out on; keys whose agent
        # may no longer read their topic (nothing goes out on them); keys by agent.
        self._keys: dict[bytes, set[bytes]] = {}
        self._revoked: set[bytes] = set()
        self._agent_keys: dict[str, set[bytes]] = {}
        # The admin's, on plain topics: a namespace's (exact) or a tier's (prefixes).
        self._exact: Counter[bytes] = Counter()
        self._prefixes: Counter[bytes] = Counter()
        self._warned: set[bytes] = set()  # bare prefixes already logged
        # Bare prefixes not yet told, and when each came: see _unsigned
        self._bare: dict[bytes, float] = {}
        self._set_aside: list[dict[bytes, list[dict[str, Any]]]] = []  # see set_aside
        # topic subscribed by name -> (tier, namespace, its last event number, when taken)
        self._marks: dict[bytes, tuple[str, str, int, float]] = {}
        # for subscribers of whole tiers: tier -> namespace -> (last event number, when)
        self._tier_marks: dict[str, dict[str, tuple[int, float]]] = {}

    def publish(self, pub: zmq.Socket[Any]) -> None:
        """Send what :meth:`set_aside` kept, then one message per topic and listener for
        the events of the request just answered: in the order the requests were (owner
        thread only).

        Only topics someone subscribed to are encoded and sent (a PUB would drop the
        rest anyway, after the server had packed them). Every event is counted in metrics.
        """
        self._send_set_aside(pub)
        self._send(pub, self.take())

    def _send_set_aside(self, pub: zmq.Socket[Any]) -> None:
        for outgoing in self._set_aside:
            self._send(pub, outgoing)
        self._set_aside.clear()

    def _send(self, pub: zmq.Socket[Any], by_topic: dict[bytes, list[dict[str, Any]]]) -> None:
        """Send events taken by :meth:`take`, packed once per topic, to whoever may read
        them now (events set aside before a registration change go by the new one)."""
        for topic, events in by_topic.items():
            payload = pack(events)
            for destination in self._destinations(topic, wide=True):
                pub.send_multipart([destination, HEADER, payload])

    def _destinations(self, topic: bytes, wide: bool) -> list[bytes]:
        """What a namespace's messages go out on: its plain topic if the admin listens to
        it (by name, or to its tier when ``wide``), and each key of an agent that may read it."""
        keys = self._keys.get(topic, ())
        heard = topic in self._exact or (wide and any(topic.startswith(p) for p in self._prefixes))
        return [topic, *keys] if heard else list(keys)

    def send_marks(self, pub: zmq.Socket[Any], now: float) -> None:
        """Send each namespace that changed in the last :data:`MARK_WINDOW_S` its last
        event number, a *mark* ``{"kind": "mark", "tier", "namespace", "seq", "epoch"}`` (owner
        thread only): on its own topic (and keys), in a message of its own, if someone
        subscribed to it by name; and on the tier's topic (``tier/``), in messages of up to
        :data:`MARKS_PER_MESSAGE` marks, if someone subscribed to the whole tier (the
        admin's tools: ``""`` or ``"tier/"``).

        A subscriber learns from the numbers of later events that it missed some; a mark
        tells it the same when no later event comes: ZeroMQ drops a slow subscriber's
        messages once its queue is full, the newest first, so the events missed are
        often the last ones (:mod:`hivemem.memory_bus.event_gaps`). Events set aside go
        out first, so that no mark overtakes the events it counts.
        """
        self._send_set_aside(pub)
        for prefix, came in list(self._bare.items()):
            if now - came >= MARK_PERIOD_S:  # no grant followed it: a subscriber of its own
                self._tell_bare(prefix)
        for topic, (tier, namespace, seq, taken) in list(self._marks.items()):
            destinations = self._destinations(topic, wide=False)
            if now - taken > MARK_WINDOW_S or not destinations:
                del self._marks[topic]
            else:
                _send_marks(pub, destinations, tier, [(namespace, seq)], self.epoch)
        for tier, recent in list(self._tier_marks.items()):
            if not self._whole_tier_heard(tier, {}):
                del self._tier_marks[tier]  # nobody listens to the whole tier any more
                continue
            topic = wire_topic(tier, "")
            for namespace in [ns for ns, (_, taken) in recent.items() if now - taken > MARK_WINDOW_S]:  # fmt: skip
                del recent[namespace]
            found = [(namespace, seq) for namespace, (seq, _) in recent.items()]
            for start in range(0, len(found), MARKS_PER_MESSAGE):
                _send_marks(
                    pub, [topic], tier, found[start : start + MARKS_PER_MESSAGE], self.epoch
                )

    def set_aside(self) -> bool:
        """Take the events now and keep them for the next :meth:`publish` (any thread,
        under the server's lock: the socket is the owner thread's); whether there were any."""
        outgoing = self.take()
        if outgoing:
            self._set_aside.append(outgoing)
        return bool(outgoing)

    def take(self) -> dict[bytes, list[dict[str, Any]]]:
        """The events not yet published, by topic, for the topics someone subscribed to
        (every event counted in metrics); the queue is emptied. Any thread may take them
        (under the server's lock); only the owner thread may send them."""
        if not self.events:
            return {}
        # Subscriptions are read when the poller says the XPUB has some (see
        # ``OwnerLoop.run``); a receive here, which fails with an exception nearly
        # always, cost more than the rest of publishing.
        exact, prefixes, keys = self._exact, self._prefixes, self._keys
        by_topic: dict[bytes, list[dict[str, Any]]] = {}
        whole: dict[str, bool] = {}  # tier -> whether someone subscribed to all of it
        taken = time.monotonic()
        for event in self.events:
            self.metrics.event(event)
            if not exact and not prefixes and not keys:
                continue
            topic = event_topic(event.tier, event.namespace)
            if (
                topic not in by_topic
                and topic not in exact
                and topic not in keys
                and not any(topic.startswith(p) for p in prefixes)
            ):
                continue
            if event.edge is not None:
                by_topic.setdefault(topic, []).append(_edge_message(event))
            else:
                by_topic.setdefault(topic, []).extend(
                    {
                        "kind": event.kind,
                        "tier": event.tier,
                        "namespace": event.namespace,
                        "item_id": item_id,
                        "version": event.version,
                        "now": event.now,
                        "seq": seq,
                    }
                    for seq, item_id in enumerate(event.item_ids, event.seq)
                )
            last = event.seq + len(event.item_ids) - 1
            if topic in exact or topic in keys:
                self._marks[topic] = (event.tier, event.namespace, last, taken)
            if prefixes and self._whole_tier_heard(event.tier, whole):
                self._tier_marks.setdefault(event.tier, {})[event.namespace] = (last, taken)
        self.events.clear()
        return by_topic

    def _whole_tier_heard(self, tier: str, known: dict[str, bool]) -> bool:
        """Whether someone subscribed to all of ``tier`` (``known``: answers so far)."""
        heard = known.get(tier)
        if heard is None:
            topic = wire_topic(tier, "")
            heard = known[tier] = any(topic.startswith(p) for p in self._prefixes)
        return heard

    def take_subscriptions(self, pub: zmq.Socket[Any]) -> None:
        """Act on the subscriptions the XPUB reports (``b"\\x01"``/``b"\\x00"`` + payload).

        An authorised subscription subscribes the peer that sent it (in manual mode a
        socket option applies to the last peer read from); its unsubscription (sent when
        the subscriber unsubscribes or disconnects) undoes it. Anything else is ignored:
        bare topics, malformed payloads, refused tokens or topics (logged).
        """
        while True:
            try:
                message = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if message[:1] == b"\x01":
                self._subscribe(pub, message[1:])
            elif message[:1] == b"\x00":
                self._unsubscribe(pub, message[1:])

    def recheck(self, agent_id: str) -> None:
        """Check ``agent_id``'s live subscriptions again, its registration having changed:
        nothing more goes out on those whose topic it may no longer read, and those it may
        read again resume (with a gap: :mod:`hivemem.memory_bus.event_gaps`).

        Any thread that holds the server's lock (the ``register`` op calls it, through
        :attr:`~hivemem.memory_bus.auth.AgentRegistry.listeners`): no socket is touched,
        and every event taken after it goes by the new access.
        """
        for key in self._agent_keys.get(agent_id, ()):
            grant = self._grants[key]
            try:
                self.authorize(grant.agent, grant.token, grant.topic)
            except HivememError as exc:
                self._revoke(key, grant, exc)
            else:
                self._allow(key, grant)

    def _subscribe(self, pub: zmq.Socket[Any], payload: bytes) -> None:
        if not payload.startswith(HEADER):
            self._unsigned(payload)  # a subscriber's own filter, or someone unsigned
            return
        try:
            grant = self._grant(payload)
        except HivememError as exc:
            self.metrics.subscriptions_refused.inc()
            log.info("event subscription refused: %s", exc)
            return
        self._bare.pop(grant.prefix, None)  # the filter of this grant's SUB, sent first
        for prefix in _listens_on(payload, grant):
            pub.setsockopt(zmq.SUBSCRIBE, prefix)
        if grant.keyed:
            self._agent_keys.setdefault(grant.agent, set()).add(payload)
            self._allow(payload, grant)  # its other peers' too, if they had lost it
        else:
            self._count_plain(payload, grant, held=True)
        self._grants[payload] = grant
        self._held[payload] += 1
        self._filters[grant.prefix] += 1
        self.metrics.subscriptions.inc()
        self._joined(pub, grant, payload)

    def _grant(self, payload: bytes) -> Grant:
        """What a signed subscription grants, once its token and access are checked."""
        found = decode_subscription(payload)
        if found is None:
            raise HivememError("a malformed signed subscription")
        agent, token, topic = found
        prefix = self.authorize(agent, token, topic)
        keyed = agent != ADMIN_AGENT  # the admin may read everything, for good
        if keyed and not prefix.endswith(TOPIC_END):
            raise HivememError(f"{agent!r} may subscribe to one namespace at a time, not {topic!r}")
        return Grant(agent, token, topic, prefix, keyed)

    def _unsubscribe(self, pub: zmq.Socket[Any], payload: bytes) -> None:
        """Undo a subscription for the peer that sends it back. It is not authorised
        again (an agent that lost its access unsubscribes all the same): only a payload
        held is acted on, and making one takes the agent's token."""
        grant = self._grants.get(payload)
        if grant is None:
            return  # bare, refused or malformed: nothing was subscribed
        for prefix in _listens_on(payload, grant):
            pub.setsockopt(zmq.UNSUBSCRIBE, prefix)  # ignored once the peer is gone
        if not grant.keyed:
            self._count_plain(payload, grant, held=False)
        if payload not in self._revoked:
            self.metrics.subscriptions.dec()
        _less(self._filters, grant.prefix)
        if not _less(self._held, payload):
            del self._grants[payload]
            if grant.keyed:
                self._forget(payload, grant)

    def _count_plain(self, payload: bytes, grant: Grant, held: bool) -> None:
        """Count an admin's subscription in (``held``) or out of the plain topics."""
        totals = self._exact if grant.prefix.endswith(TOPIC_END) else self._prefixes
        for prefix in _listens_on(payload, grant):
            if held:
                totals[prefix] += 1
            else:
                _less(totals, prefix)

    def _allow(self, key: bytes, grant: Grant) -> None:
        """Send a key its topic's events (again)."""
        if key in self._revoked:
            self._revoked.discard(key)
            self.metrics.subscriptions.inc(self._held[key])
        self._keys.setdefault(grant.prefix, set()).add(key)

    def _revoke(self, key: bytes, grant: Grant, why: HivememError) -> None:
        """Stop sending on a key whose agent may no longer read its topic."""
        if key in self._revoked:
            return
        self._revoked.add(key)
        self.metrics.subscriptions.dec(self._held[key])
        self._drop_key(key, grant)
        log.info("event subscription of %r to %r withdrawn: %s", grant.agent, grant.topic, why)

    def _forget(self, key: bytes, grant: Grant) -> None:
        """Drop a key no peer holds any more."""
        self._revoked.discard(key)
        self._drop_key(key, grant)
        keys = self._agent_keys[grant.agent]
        keys.discard(key)
        if not keys:
            del self._agent_keys[grant.agent]

    def _drop_key(self, key: bytes, grant: Grant) -> None:
        keys = self._keys.get(grant.prefix)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[grant.prefix]

    def _joined(self, pub: zmq.Socket[Any], grant: Grant, key: bytes) -> None:
        """Send a namespace's new subscriber its last event number at once: the events
        made since it asked (``subscribe``) and before its subscription reached this
        socket never reach it, and the mark shows them as a gap."""
        if self.last_seq is None or not grant.prefix.endswith(TOPIC_END):
            return  # a whole tier: its marks come with the tier's
        found = self.last_seq(grant.topic)
        if found is not None and found[2] > 0:
            self._send_set_aside(pub)  # they go first (to this subscriber too): counted
            destination = key if grant.keyed else grant.prefix
            _send_marks(pub, [destination], found[0], [(found[1], found[2])], self.epoch)

    def _unsigned(self, prefix: bytes) -> None:
        """Say once per prefix that a bare subscription gets nothing (a client from before
        subscriptions were signed, or a plain SUB socket), unless it is a signed
        subscriber's own filter.

        A client subscribes its filter right after the signed subscription, but a SUB
        that connects (or reconnects) sends all it holds sorted: the admin's ``""``
        filter comes *before* its signed subscription (``HMB1...``), so every
        ``events([""])`` was told it gets nothing, and got everything. So a bare prefix
        held by no grant yet waits: a grant of that prefix (the SUB's own, sent with it)
        explains it; one still waiting a second later (:data:`MARK_PERIOD_S`) is told.
        Each prefix waits on its own: when only one could wait, another socket's bare
        subscription arriving between the admin's ``""`` and its grant had the admin's
        filter told.
        """
        if prefix in self._filters or prefix in self._warned or prefix in self._bare:
            return
        if len(self._bare) >= _WARN_AT_MOST:  # a flood of bare prefixes: the oldest is told
            self._tell_bare(next(iter(self._bare)))
        self._bare[prefix] = time.monotonic()

    def _tell_bare(self, prefix: bytes) -> None:
        """Warn of ``prefix``, a bare prefix :meth:`_unsigned` kept waiting."""
        del self._bare[prefix]
        if prefix in self._filters or prefix in self._warned:
            return
        if len(self._warned) < _WARN_AT_MOST:
            self._warned.add(prefix)
            log.warning(
                "a subscription to %r without an agent's signature gets no events: subscribe "
                "with a client's events() (docs/protocol.md, Events)",
                prefix,
            )


def _listens_on(payload: bytes, grant: Grant) -> tuple[bytes, ...]:
    """The prefixes a granted peer is subscribed to on the XPUB: its key (an agent's), or
    the plain topic (the admin's; every tier's name for ``""``: see :data:`_EVERY_TIER`)."""
    if grant.keyed:
        return (payload,)
    return (grant.prefix,) if grant.prefix else _EVERY_TIER


def _less(counts: Counter[bytes], key: bytes) -> int:
    """Count ``key`` once less (dropping it at 0); how many are left."""
    left = counts[key] - 1
    if left > 0:
        counts[key] = left
    else:
        del counts[key]
    return max(left, 0)


def _edge_message(event: MemoryEvent) -> dict[str, Any]:
    """The published map of an edge event (``docs/protocol.md``, Events)."""
    return {"kind": event.kind, "tier": event.tier, "namespace": event.namespace,
            "edge_id": event.item_ids[0], **(event.edge or {}), "now": event.now,
            "seq": event.seq}  # fmt: skip


def _send_marks(
    pub: zmq.Socket[Any],
    destinations: list[bytes],
    tier: str,
    found: list[tuple[str, int]],
    epoch: str | None,
) -> None:
    """One message on each of ``destinations``: a mark for each (namespace, last number)."""
    marks = [
        {"kind": MARK, "tier": tier, "namespace": ns, "seq": seq, "epoch": epoch}
        for ns, seq in found
    ]
    payload = pack(marks)
    for destination in destinations:
        pub.send_multipart([destination, HEADER, payload])
