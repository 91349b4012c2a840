"""The bus server's event feed: the store's events, sent per topic on an XPUB socket.

A store reports every write, update and eviction to its subscribers; the server queues
them in an :class:`EventPublisher` and, once a request is answered, publishes those the
request caused, on the topic ``"<tier>/<namespace>"`` (frames in ``docs/protocol.md``).
Its owner thread makes every call, on the socket it owns.
"""

from __future__ import annotations

from typing import Any

import zmq
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.namespace import MemoryEvent
from hivemem.memory_bus.protocol import HEADER, pack


class EventPublisher:
    """The events of the requests a server answers, and the topics someone listens to.

    Args:
        metrics: Where every event is counted.

    Attributes:
        events: The store's events not yet published (the server subscribes
            ``events.append`` to its store).
    """

    def __init__(self, metrics: BusMetrics) -> None:
        self.metrics = metrics
        self.events: list[MemoryEvent] = []
        self._topics: set[bytes] = set()  # event topic prefixes someone subscribed to

    def publish(self, pub: zmq.Socket[Any]) -> None:
        """One message per topic for the events of the request just answered.

        Only topics someone subscribed to are encoded and sent: the events socket is an
        XPUB, which tells the server its subscriptions (a PUB would drop the rest
        anyway, after the server had packed them). Every event is counted in metrics.
        """
        if not self.events:
            return
        # Subscriptions are read when the poller says the XPUB has some (see
        # ``BusServer._loop``); a receive here, which fails with an exception nearly
        # always, cost more than the rest of publishing.
        topics = self._topics
        by_topic: dict[bytes, list[dict[str, Any]]] = {}
        for event in self.events:
            self.metrics.event(event)
            if not topics:
                continue
            topic = f"{event.tier}/{event.namespace}".encode()
            if topic not in by_topic and not any(topic.startswith(t) for t in topics):
                continue
            by_topic.setdefault(topic, []).extend(
                {
                    "kind": event.kind,
                    "tier": event.tier,
                    "namespace": event.namespace,
                    "item_id": item_id,
                    "version": event.version,
                    "now": event.now,
                }
                for item_id in event.item_ids
            )
        for topic, events in by_topic.items():
            pub.send_multipart([topic, HEADER, pack(events)])
        self.events.clear()

    def take_subscriptions(self, pub: zmq.Socket[Any]) -> None:
        """Read the subscriptions the XPUB reports (``b"\\x01"``/``b"\\x00"`` + prefix).

        A prefix is reported when its first subscriber joins and when its last one leaves
        (or disconnects), so a set holds exactly the prefixes someone listens to.
        """
        while True:
            try:
                message = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if message[:1] == b"\x01":
                self._topics.add(message[1:])
            elif message[:1] == b"\x00":
                self._topics.discard(message[1:])
