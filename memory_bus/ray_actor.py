"""The bus as a named Ray actor, so agent hosts on any node of a cluster can find it.

Ray is imported here only. The actor owns a :class:`BusServer` bound to its node's IP
(or the host given) and hands out the address; clients then talk ZeroMQ directly, not
through Ray calls.
"""

from __future__ import annotations

from typing import Any

import ray
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DEFAULT_NAME = "hivemem-bus"
DEFAULT_NAMESPACE = "hivemem"


class BusActor:
    """Holds one bus server for the life of the actor."""

    def __init__(
        self, config_json: str, secret: bytes, host: str | None, port: int, data_dir: str | None
    ) -> None:
        store = MemoryStore(StoreConfig.model_validate_json(config_json))
        journal = Journal(data_dir) if data_dir else None
        bind = host or ray.util.get_node_ip_address()
        self.server = BusServer(store, host=bind, port=port, secret=secret, journal=journal).start()

    def addresses(self) -> dict[str, str]:
        """ROUTER and PUB addresses."""
        return {"address": self.server.address, "pub": self.server.pub_address}

    def stats(self) -> dict[str, Any]:
        """The store's counts (through Ray, for monitoring only)."""
        return self.server.store.stats()

    def stop(self) -> None:
        """Stop the server (the actor stays until killed)."""
        self.server.stop()


def start_bus_actor(
    config: StoreConfig,
    secret: bytes,
    *,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    host: str | None = None,
    port: int = 0,
    data_dir: str | None = None,
    num_cpus: float = 0,
) -> tuple[Any, dict[str, str]]:
    """Start the named bus actor, or join the one already running under that name.

    Returns:
        The actor handle and its ``{"address", "pub"}``.
    """
    remote = ray.remote(num_cpus=num_cpus, max_restarts=0)(BusActor)
    actor: Any = remote.options(name=name, namespace=namespace, get_if_exists=True).remote(
        config.model_dump_json(), secret, host, port, data_dir
    )
    addresses: dict[str, str] = ray.get(actor.addresses.remote())
    return actor, addresses


def find_bus_actor(
    name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE
) -> tuple[Any, dict[str, str]]:
    """The running bus actor of that name and its addresses (raises ValueError if none)."""
    actor: Any = ray.get_actor(name, namespace=namespace)
    addresses: dict[str, str] = ray.get(actor.addresses.remote())
    return actor, addresses
