"""Subscriptions' topics: who may receive a topic's events, and a topic's last event number.

The ``subscribe`` op (:func:`~hivemem.memory_bus.handlers.subscribe`) asks both, and the
server's event socket asks :func:`subscription_topic` again of each subscription it
receives, so a refused topic gets the same answer either way.
"""

from __future__ import annotations

from hivemem.memory_bus.arguments import split_topic
from hivemem.memory_bus.auth import AgentRegistry
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.item import TierName
from hivemem.memory_bus.protocol import wire_topic
from hivemem.memory_bus.store import MemoryStore


def topic_event_seq(store: MemoryStore, topic: str) -> tuple[str, str, int] | None:
    """(tier, namespace, its last event number) of a topic naming one namespace (0: no
    event yet); None for a whole tier or everything."""
    tier, namespace = split_topic(topic)
    if not tier or not namespace:
        return None
    found = store.tier(tier)
    ns = found.namespaces.get(namespace)
    return found.name.value, namespace, 0 if ns is None else ns.event_seq


def subscription_topic(
    store: MemoryStore, registry: AgentRegistry, caller: Caller, topic: str
) -> bytes:
    """The event-socket prefix of ``topic`` if ``caller`` may receive its events.

    One namespace (``"tier/namespace"``) needs the right to read it, as a search does;
    a whole tier (``"tier/"``) or everything (``""``) is the admin's alone, since it
    spans namespaces nobody else may read. The admin may subscribe to anything.

    Raises:
        ProtocolError: A topic of another form. UnknownNameError: An unknown tier.
        AccessDeniedError: The caller may not read what the topic covers.
    """
    tier, namespace = split_topic(topic)
    name = TierName.parse(tier) if tier else None
    if name is not None and namespace and not registry.is_admin(caller):
        store.tier(name).ctx.access.check(caller, name, namespace, "subscribe to")
        if name is TierName.GRAPH and not store.graph.reads_every_level(caller):
            # A graph's events name nodes (and edges) on every level, hidden ones too.
            raise AccessDeniedError(
                caller.agent_id,
                name.value,
                namespace,
                f"subscribe (role {caller.role!r} reads only some graph levels) to",
            )
    elif not registry.is_admin(caller):
        raise AccessDeniedError(caller.agent_id, tier or "*", "*", "subscribe to")
    return wire_topic(name.value if name is not None else "", namespace)
