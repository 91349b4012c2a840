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
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.interfaces import MemoryEvent
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.protocol import (
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
        # Subscriptions the server made, by (agent, prefix), and their totals by prefix:
        # a namespace's topic (exact) or a tier or everything (prefixes, the admin's).
        self._held: Counter[tuple[str, bytes]] = Counter()
        self._exact: Counter[bytes] = Counter()
        self._prefixes: Counter[bytes] = Counter()
        self._warned: set[bytes] = set()  # bare prefixes already logged
        self._set_aside: list[dict[bytes, list[dict[str, Any]]]] = []  # see set_aside
        # topic subscribed by name -> (tier, namespace, its last event number, when taken)
        self._marks: dict[bytes, tuple[str, str, int, float]] = {}
        # for subscribers of whole tiers: tier -> namespace -> (last event number, when)
        self._tier_marks: dict[str, dict[str, tuple[int, float]]] = {}

    def publish(self, pub: zmq.Socket[Any]) -> None:
        """Send what :meth:`set_aside` kept, then one message per topic for the events of
        the request just answered: in the order the requests were (owner thread only).

        Only topics someone subscribed to are encoded and sent (a PUB would drop the
        rest anyway, after the server had packed them). Every event is counted in metrics.
        """
        self._send_set_aside(pub)
        send(pub, self.take())

    def _send_set_aside(self, pub: zmq.Socket[Any]) -> None:
        for outgoing in self._set_aside:
            send(pub, outgoing)
        self._set_aside.clear()

    def send_marks(self, pub: zmq.Socket[Any], now: float) -> None:
        """Send each namespace that changed in the last :data:`MARK_WINDOW_S` its last
        event number, a *mark* ``{"kind": "mark", "tier", "namespace", "seq", "epoch"}`` (owner
        thread only): on its own topic, in a message of its own, if someone subscribed
        to it by name; and on the tier's topic (``tier/``), in messages of up to
        :data:`MARKS_PER_MESSAGE` marks, if someone subscribed to the whole tier (the
        admin's tools: ``""`` or ``"tier/"``).

        A subscriber learns from the numbers of later events that it missed some; a mark
        tells it the same when no later event comes: ZeroMQ drops a slow subscriber's
        messages once its queue is full, the newest first, so the events missed are
        often the last ones (:mod:`hivemem.memory_bus.event_gaps`). Events set aside go
        out first, so that no mark overtakes the events it counts.
        """
        self._send_set_aside(pub)
        for topic, (tier, namespace, seq, taken) in list(self._marks.items()):
            if now - taken > MARK_WINDOW_S or topic not in self._exact:
                del self._marks[topic]
            else:
                _send_marks(pub, topic, tier, [(namespace, seq)], self.epoch)
        for tier, recent in list(self._tier_marks.items()):
            if not self._whole_tier_heard(tier, {}):
                del self._tier_marks[tier]  # nobody listens to the whole tier any more
                continue
            topic = wire_topic(tier, "")
            for namespace in [ns for ns, (_, taken) in recent.items() if now - taken > MARK_WINDOW_S]:  # fmt: skip
                del recent[namespace]
            found = [(namespace, seq) for namespace, (seq, _) in recent.items()]
            for start in range(0, len(found), MARKS_PER_MESSAGE):
                _send_marks(pub, topic, tier, found[start : start + MARKS_PER_MESSAGE], self.epoch)

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
        (under the server's lock); only the owner thread may :func:`send` them."""
        if not self.events:
            return {}
        # Subscriptions are read when the poller says the XPUB has some (see
        # ``BusServer._loop``); a receive here, which fails with an exception nearly
        # always, cost more than the rest of publishing.
        exact, prefixes = self._exact, self._prefixes
        by_topic: dict[bytes, list[dict[str, Any]]] = {}
        whole: dict[str, bool] = {}  # tier -> whether someone subscribed to all of it
        taken = time.monotonic()
        for event in self.events:
            self.metrics.event(event)
            if not exact and not prefixes:
                continue
            topic = event_topic(event.tier, event.namespace)
            if (
                topic not in by_topic
                and topic not in exact
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
            if topic in exact:
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
            subscribing = message[:1] == b"\x01"
            if message[:1] not in (b"\x00", b"\x01"):
                continue
            if not message[1:].startswith(HEADER):
                if subscribing:
                    self._unsigned(message[1:])
                continue  # a bare prefix: a subscriber's own filter, or someone unsigned
            found = decode_subscription(message[1:])
            try:
                if found is None:
                    raise HivememError("a malformed signed subscription")
                agent, token, topic = found
                prefix = self.authorize(agent, token, topic)
            except HivememError as exc:
                if subscribing:
                    self.metrics.subscriptions_refused.inc()
                log.info("event subscription refused: %s", exc)
                continue
            self._change(pub, agent, prefix, subscribing)
            if subscribing:
                self._joined(pub, topic, prefix)

    def _joined(self, pub: zmq.Socket[Any], topic: str, prefix: bytes) -> None:
        """Send a namespace's new subscriber its last event number at once: the events
        made since it asked (``subscribe``) and before its subscription reached this
        socket never reach it, and the mark shows them as a gap."""
        found = self.last_seq(topic) if self.last_seq and prefix.endswith(TOPIC_END) else None
        if found is not None and found[2] > 0:
            self._send_set_aside(pub)  # they go first (to this subscriber too): counted
            _send_marks(pub, prefix, found[0], [(found[1], found[2])], self.epoch)

    def _unsigned(self, prefix: bytes) -> None:
        """Say once per prefix that a bare subscription gets nothing (a client from before
        subscriptions were signed, or a plain SUB socket), unless it is a signed
        subscriber's own filter: a client sends that right after the signed one."""
        if prefix in self._exact or prefix in self._prefixes or prefix in self._warned:
            return
        if len(self._warned) < _WARN_AT_MOST:
            self._warned.add(prefix)
            log.warning(
                "a subscription to %r without an agent's signature gets no events: subscribe "
                "with a client's events() (docs/protocol.md, Events)",
                prefix,
            )

    def _change(self, pub: zmq.Socket[Any], agent: str, prefix: bytes, subscribing: bool) -> None:
        key = (agent, prefix)
        totals = self._exact if prefix.endswith(TOPIC_END) else self._prefixes
        if subscribing:
            pub.setsockopt(zmq.SUBSCRIBE, prefix)
            self._held[key] += 1
            totals[prefix] += 1
            self.metrics.subscriptions.inc()
        elif self._held[key] > 0:  # only what this agent subscribed to, once each
            pub.setsockopt(zmq.UNSUBSCRIBE, prefix)  # ignored once the peer is gone
            self._held[key] -= 1
            totals[prefix] -= 1
            self.metrics.subscriptions.dec()
            if not totals[prefix]:
                del totals[prefix]
            if not self._held[key]:
                del self._held[key]


def _edge_message(event: MemoryEvent) -> dict[str, Any]:
    """The published map of an edge event (``docs/protocol.md``, Events)."""
    return {"kind": event.kind, "tier": event.tier, "namespace": event.namespace,
            "edge_id": event.item_ids[0], **(event.edge or {}), "now": event.now,
            "seq": event.seq}  # fmt: skip


def _send_marks(
    pub: zmq.Socket[Any],
    topic: bytes,
    tier: str,
    found: list[tuple[str, int]],
    epoch: str | None,
) -> None:
    """One message on ``topic``: a mark for each (namespace, last event number)."""
    marks = [
        {"kind": MARK, "tier": tier, "namespace": ns, "seq": seq, "epoch": epoch}
        for ns, seq in found
    ]
    pub.send_multipart([topic, HEADER, pack(marks)])


def send(pub: zmq.Socket[Any], by_topic: dict[bytes, list[dict[str, Any]]]) -> None:
    """Send events taken by :meth:`EventPublisher.take`: one message per topic."""
    for topic, events in by_topic.items():
        pub.send_multipart([topic, HEADER, pack(events)])
