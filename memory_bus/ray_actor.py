"""The bus as a named Ray actor, so agent hosts on any node of a cluster can find it.

Ray is imported here only. The actor owns a :class:`BusServer` bound to its node's IP
(or the host given) and hands out the address; clients then talk ZeroMQ directly, not
through Ray calls.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

import ray
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DEFAULT_NAME = "hivemem-bus"
DEFAULT_NAMESPACE = "hivemem"


class BusActor:
    """Holds one bus server for the life of the actor."""

    def __init__(
        self,
        config_json: str,
        secret: bytes,
        host: str | None,
        port: int,
        data_dir: str | None,
        shard: tuple[int, int] = (0, 1),
        metrics: bool = False,
        spin_us: int = 0,
    ) -> None:
        store = MemoryStore(StoreConfig.model_validate_json(config_json)).as_shard(*shard)
        journal = Journal(data_dir) if data_dir else None
        bind = host or ray.util.get_node_ip_address()
        bus_metrics = BusMetrics() if metrics else None
        self.server = BusServer(
            store,
            host=bind,
            port=port,
            secret=secret,
            journal=journal,
            metrics=bus_metrics,
            spin_us=spin_us,
        ).start()
        # /metrics on a free port of the actor's node: shards may share a node
        self.metrics = f"{bind}:{bus_metrics.serve(0, bind)}" if bus_metrics else ""

    def addresses(self) -> dict[str, str]:
        """ROUTER and PUB addresses, the Ray node id, and ``metrics`` (host:port of
        /metrics) if served."""
        out = {
            "address": self.server.address,
            "pub": self.server.pub_address,
            "node": ray.get_runtime_context().get_node_id(),
        }
        if self.metrics:
            out["metrics"] = self.metrics
        return out

    def serves(self, config_json: str, secret: bytes) -> bool:
        """Whether this actor's bus is the one ``config_json`` and ``secret`` describe
        (a caller joining it by name checks that it joined the bus it meant)."""
        same = self.server.store.config == StoreConfig.model_validate_json(config_json)
        return same and hmac.compare_digest(self.server.secret, secret)

    def spin_us(self) -> int:
        """The server's busy polling after each answer, in microseconds (0: off)."""
        return round(self.server.spin_s * 1e6)

    def pid(self) -> int:
        """The actor's process id (benchmarks read its memory from /proc)."""
        return os.getpid()

    def stats(self) -> dict[str, Any]:
        """The store's counts (through Ray, for monitoring only)."""
        return self.server.inspect(MemoryStore.stats)

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
    shard: tuple[int, int] = (0, 1),
) -> tuple[Any, dict[str, str]]:
    """Start the named bus actor, or join the one already running under that name
    (which must serve ``config`` under ``secret``: :class:`ConfigError` otherwise, where
    before the call joined it and the caller's tokens failed later).

    ``shard`` is ``(index, count)`` for one server of a sharded bus (its store hands out
    ids ``1 + index``, ``1 + index + count``, ...); :func:`start_bus_shards` starts all
    the shards of a bus, spread over the nodes.

    Returns:
        The actor handle and its ``{"address", "pub"}``.
    """
    actor = _launch(config, secret, name, namespace, host, port, data_dir, num_cpus, shard)
    if not ray.get(actor.serves.remote(config.model_dump_json(), secret)):
        raise ConfigError(
            f"a bus actor named {name!r} (Ray namespace {namespace!r}) already runs with "
            "another store configuration or secret: stop it, or give another name"
        )
    addresses: dict[str, str] = ray.get(actor.addresses.remote())
    return actor, addresses


def _launch(
    config: StoreConfig,
    secret: bytes,
    name: str,
    namespace: str,
    host: str | None,
    port: int,
    data_dir: str | None,
    num_cpus: float,
    shard: tuple[int, int],
    metrics: bool = False,
    placement: Any = "SPREAD",
    spin_us: int = 0,
) -> Any:
    remote = ray.remote(num_cpus=num_cpus, max_restarts=0)(BusActor)
    return remote.options(
        name=name, namespace=namespace, get_if_exists=True, scheduling_strategy=placement
    ).remote(config.model_dump_json(), secret, host, port, data_dir, shard, metrics, spin_us)


def start_bus_shards(
    config: StoreConfig,
    secret: bytes,
    shards: int,
    *,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    metrics: bool = False,
    spin_us: int = 0,
) -> tuple[list[Any], list[dict[str, str]], Any]:
    """Start the ``shards`` servers of a sharded bus at once, as actors ``{name}-{i}``.

    They share ``secret`` (a token is valid on every shard), and spread over the
    cluster's nodes (:func:`spread_placement`). With ``metrics`` each serves
    ``hivemem_bus_*`` on a free port of its node; ``spin_us`` is each server's busy
    polling after an answer (:class:`~hivemem.memory_bus.server.BusServer`). Returns
    the actor handles, their addresses (``address``, ``pub``, ``node``, ``metrics``) in
    shard order, the order clients route by, and the placement group to release with
    :func:`remove_placement` once the shards are stopped.
    """
    group, placement = spread_placement(shards)
    actors = [
        _launch(
            config,
            secret,
            f"{name}-{i}",
            namespace,
            None,
            0,
            None,
            0,
            (i, shards),
            metrics,
            placement[i],
            spin_us,
        )
        for i in range(shards)
    ]
    found: list[dict[str, str]] = ray.get([a.addresses.remote() for a in actors])
    return actors, found, group


_BUNDLE = {"CPU": 0.001}  # a placement-group bundle cannot be empty; the actors take 0 CPUs


def spread_placement(actors: int, timeout: float = 60.0) -> tuple[Any, list[Any]]:
    """How to place ``actors`` zero-CPU actors so that they spread over the cluster's nodes.

    The ``SPREAD`` strategy alone is best effort and, for zero-CPU actors, not followed
    in practice: on a fresh 3-node cluster (``ray.cluster_utils``), three agent hosts
    landed on one node in about one run of three, even after probe actors had spread. So
    on a cluster of several nodes the actors go into a placement group of one tiny
    bundle each with the ``SPREAD`` strategy, which Ray's GCS places with the whole
    cluster in view; when a node dies, its bundles are placed again elsewhere and
    restartable actors in them restart there. On one node (or if the group cannot be
    placed in ``timeout``) each actor is placed by plain ``SPREAD``. Agent hosts and the
    shards of a bus both use it.

    Returns:
        The placement group (None without one; pass it to :func:`remove_placement`)
        and one scheduling strategy per actor.
    """
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if actors < 2 or sum(1 for n in ray.nodes() if n.get("Alive")) < 2:
        return None, ["SPREAD"] * actors
    group = placement_group([dict(_BUNDLE) for _ in range(actors)], strategy="SPREAD")
    try:
        ray.get(group.ready(), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        return None, ["SPREAD"] * actors
    return group, [
        PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
        for i in range(actors)
    ]


def remove_placement(group: Any) -> None:
    """Release the placement group of :func:`spread_placement` (None: nothing to do)."""
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)


def find_bus_actor(
    name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE
) -> tuple[Any, dict[str, str]]:
    """The running bus actor of that name and its addresses (raises ValueError if none)."""
    actor: Any = ray.get_actor(name, namespace=namespace)
    addresses: dict[str, str] = ray.get(actor.addresses.remote())
    return actor, addresses
