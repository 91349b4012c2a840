"""The bus as a named Ray actor, so agent hosts on any node of a cluster can find it.

Ray is imported here only. The actor owns a :class:`BusServer` bound to its node's IP
(or the host given) and hands out the address; clients then talk ZeroMQ directly, not
through Ray calls.

A bus actor serves from its start until :meth:`BusActor.stop`, or until the driver that
started it exits (Ray ends an actor with its owner), unless it was started ``detached``:
then it outlives every driver, and only :meth:`BusActor.stop` with ``ray.kill`` (from
any driver) or the end of the Ray cluster ends it. After ``stop`` the actor process
stays (until killed) but serves nothing: :func:`find_bus_actor` refuses it and
:func:`start_bus_actor` kills it and starts a new one under the name.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

import ray
from hivemem.memory_bus.bus_launch import BusLaunch, default_pub_port, port_of, real_path
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError, HivememError
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DEFAULT_NAME = "hivemem-bus"
DEFAULT_NAMESPACE = "hivemem"

NAME_WAIT_S = 10.0
"""How long :func:`start_bus_actor` waits for Ray to free the name of a dead bus actor
(about a second after its death here) before it can start a new one under it."""


class BusActor:
    """Holds one bus server for the life of the actor (until :meth:`stop`)."""

    def __init__(self, config_json: str, secret: bytes, launch: BusLaunch) -> None:
        store = MemoryStore(StoreConfig.model_validate_json(config_json)).as_shard(*launch.shard)
        journal = Journal(launch.data_dir) if launch.data_dir else None
        bind = launch.host or ray.util.get_node_ip_address()
        bus_metrics = BusMetrics() if launch.metrics else None
        self.launch, self.bind = launch, bind
        self.server = BusServer(
            store,
            host=bind,
            port=launch.port,
            pub_port=default_pub_port(launch.port, launch.pub_port or None),
            secret=secret,
            journal=journal,
            metrics=bus_metrics,
            spin_us=launch.spin_us,
        ).start()
        self.stopped = False
        # /metrics on a free port of the actor's node: shards may share a node
        self._bus_metrics = bus_metrics
        self.metrics = ""
        if bus_metrics is not None:
            self.metrics = f"{bind}:{bus_metrics.serve(0, bind)}"

    def addresses(self) -> dict[str, str]:
        """ROUTER and PUB addresses, the Ray node id, and ``metrics`` (host:port of
        /metrics) if served.

        Raises:
            HivememError: the bus was stopped (its addresses answer nothing).
        """
        if self.stopped:
            raise HivememError("this bus actor was stopped: it serves nothing")
        out = {
            "address": self.server.address,
            "pub": self.server.pub_address,
            "node": ray.get_runtime_context().get_node_id(),
        }
        if self.metrics:
            out["metrics"] = self.metrics
        return out

    def serving(self) -> bool:
        """Whether the bus serves (it does from the actor's start until :meth:`stop`)."""
        return not self.stopped

    def serves(self, config_json: str, secret: bytes, launch: BusLaunch) -> list[str]:
        """What differs between this actor's bus and the one described (empty: none), so
        a caller joining it by name learns that it joined another bus than it meant
        (where writes it believes durable would not be). A stopped bus serves nothing:
        ``["stopped"]``.
        """
        if self.stopped:
            return ["stopped"]
        bound = {
            "host": self.bind,
            "port": port_of(self.server.address),
            "pub_port": port_of(self.server.pub_address),
            "data_dir": real_path(self.launch.data_dir),
        }
        differs = launch.differences(self.launch, bound)
        if self.server.store.config != StoreConfig.model_validate_json(config_json):
            differs.append("store configuration")
        if not hmac.compare_digest(self.server.secret, secret):
            differs.append("secret")
        return differs

    def spin_us(self) -> int:
        """The server's busy polling after each answer, in microseconds (0: off)."""
        return round(self.server.spin_s * 1e6)

    def pid(self) -> int:
        """The actor's process id (benchmarks read its memory from /proc; a runner
        asks it to learn that the actor lives)."""
        return os.getpid()

    def stats(self) -> dict[str, Any]:
        """The store's counts (through Ray, for monitoring only)."""
        return self.server.inspect(MemoryStore.stats)

    def stop(self) -> None:
        """Stop the server and its ``/metrics`` endpoint (the actor stays until killed,
        serving nothing: :func:`start_bus_actor` replaces it). Stopping twice is a no-op."""
        if self.stopped:
            return
        self.stopped = True
        self.server.stop()
        if self._bus_metrics is not None:  # else Prometheus scrapes a dead bus as a live one
            self._bus_metrics.stop_serving()


def start_bus_actor(
    config: StoreConfig,
    secret: bytes,
    *,
    name: str = DEFAULT_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    host: str | None = None,
    port: int = 0,
    pub_port: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    num_cpus: float = 0,
    shard: tuple[int, int] = (0, 1),
    metrics: bool = False,
    spin_us: int = 0,
    detached: bool = False,
) -> tuple[Any, dict[str, str]]:
    """Start the named bus actor, or join the one already serving under that name.

    Started ``detached`` (Ray's ``lifetime="detached"``), the actor outlives the driver
    that started it, so other drivers that joined it keep their bus (and a memory-only
    bus its acknowledged writes) after that one exits; whoever is done with the bus ends
    it: ``ray.get(actor.stop.remote())`` then ``ray.kill(actor)``, from any driver (or
    the Ray cluster stops). Else it dies with its starter, even while drivers that
    joined it use it (a run's own bus should die with a crashed run). A caller asking
    ``detached`` is refused a running bus that is not; one not asking it joins either.

    A bus joined must be the one asked for: same ``config``, ``secret``, ``host``,
    ``port``, ``pub_port``, ``data_dir``, ``shard``, ``metrics`` and ``spin_us`` (a
    caller that asked for a data dir and joined a bus without one would believe its
    writes durable). A bus actor found stopped (:meth:`BusActor.stop`) or dead is
    replaced: killed, and a new one started once Ray frees the name.

    ``shard`` is ``(index, count)`` for one server of a sharded bus (its store hands out
    ids ``1 + index``, ``1 + index + count``, ...); :func:`start_bus_shards` starts all
    the shards of a bus, spread over the nodes. ``pub_port`` (events) defaults to
    ``port + 1`` for a fixed ``port``, as ``hivemem bus serve``'s does, so that event
    subscribers find a bus restarted on its port; else any free port.

    Returns:
        The actor handle and its ``{"address", "pub", "node"}`` (and ``metrics``).

    Raises:
        ConfigError: an actor of that name serves another bus; the message names what
            differs.
        HivememError: the actor could not start (e.g. its port is taken), or the name of
            a dead one was not freed within :data:`NAME_WAIT_S`.
    """
    default_pub_port(port, pub_port)  # refuses port 65535 without a pub_port, here
    launch = BusLaunch(
        host,
        port,
        pub_port or 0,  # the actor takes port + 1 for 0; a join need not name it
        None if data_dir is None else os.fspath(data_dir),
        tuple(shard),  # type: ignore[arg-type]
        metrics,
        spin_us,
        detached,
    )
    actor, started = _start_or_join(config, secret, name, namespace, launch, num_cpus)
    if started:
        _started(actor, name)
    differs = ray.get(actor.serves.remote(config.model_dump_json(), secret, launch))
    if differs:
        raise _another_bus(name, namespace, differs)
    addresses: dict[str, str] = ray.get(actor.addresses.remote())
    return actor, addresses


def _another_bus(name: str, namespace: str, differs: list[str]) -> ConfigError:
    return ConfigError(
        f"a bus actor named {name!r} (Ray namespace {namespace!r}) already runs with "
        f"another {', '.join(differs)}: stop it, or give another name",
        name=name,
        differs=differs,
    )


def _start_or_join(
    config: StoreConfig,
    secret: bytes,
    name: str,
    namespace: str,
    launch: BusLaunch,
    num_cpus: float = 0,
    placement: Any = "SPREAD",
) -> tuple[Any, bool]:
    """The bus actor serving under ``name`` (joined: False), else a new one (True) in
    place of a stopped or dead one, or launched (its start not yet waited for). Whether
    a joined one serves the bus asked for is the caller's to check (``serves``)."""
    old = _named(name, namespace)
    if old is not None and _serving(old):
        return old, False
    if old is None:
        return _launch(config, secret, name, namespace, launch, num_cpus, placement), True
    return _replace(old, config, secret, name, namespace, launch, num_cpus, placement), True


def _named(name: str, namespace: str) -> Any:
    """The actor of that name, or None (Ray may still hand out a dead one for a while)."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _serving(actor: Any) -> bool:
    """Whether ``actor`` lives and its bus was not stopped (waits for its start).

    Only Ray's word that the actor died (``ActorDiedError``) makes it not serving: one
    Ray finds unreachable for a moment (``ActorUnavailableError``, "may be available
    later") is asked again, and if it stays so, this raises rather than have a caller
    kill a bus that may serve others.

    Raises:
        HivememError: the actor stayed unreachable for :data:`UNAVAILABLE_WAIT_S`.
    """
    return bool(_asked(actor, "serving", dead=False))


def _asked(actor: Any, method: str, dead: Any) -> Any:
    """``actor.method()``'s answer, or ``dead`` if the actor died; asked again while Ray
    finds the actor unreachable, for up to :data:`UNAVAILABLE_WAIT_S`."""
    deadline = time.monotonic() + UNAVAILABLE_WAIT_S
    while True:
        try:
            return ray.get(getattr(actor, method).remote())
        except ray.exceptions.ActorUnavailableError as exc:
            if time.monotonic() > deadline:
                raise HivememError(
                    f"the bus actor stayed unreachable for {UNAVAILABLE_WAIT_S} s: {exc}"
                ) from exc
            time.sleep(0.2)
        except ray.exceptions.RayActorError:
            return dead


UNAVAILABLE_WAIT_S = 10.0
"""How long a bus actor Ray finds unreachable (not dead) is asked again."""


def _replace(
    old: Any,
    config: StoreConfig,
    secret: bytes,
    name: str,
    namespace: str,
    launch: BusLaunch,
    num_cpus: float,
    placement: Any,
) -> Any:
    """Start a bus actor under ``name`` in place of ``old`` (stopped or dead).

    Ray frees the name of a killed or failed actor a moment after its death; until then
    ``get_if_exists`` hands back the dead one (whose failure a caller would take for its
    own), so this waits for a handle to another actor.
    """
    ray.kill(old, no_restart=True)
    deadline = time.monotonic() + NAME_WAIT_S
    actor = _launch(config, secret, name, namespace, launch, num_cpus, placement)
    while actor._actor_id == old._actor_id:  # Ray's id, no public one
        if time.monotonic() > deadline:
            raise HivememError(
                f"the bus actor {name!r} (Ray namespace {namespace!r}) died or was stopped, "
                f"and Ray did not free its name within {NAME_WAIT_S} s",
                name=name,
            )
        time.sleep(0.1)
        actor = _launch(config, secret, name, namespace, launch, num_cpus, placement)
    _started(actor, name)
    return actor


def _started(actor: Any, name: str) -> None:
    """Wait for ``actor`` to start; a start that failed raises its reason, translated."""
    try:
        ray.get(actor.pid.remote())
    except ray.exceptions.ActorUnavailableError:  # for a moment: ask again, a while
        if _asked(actor, "pid", dead=None) is None:
            raise HivememError(f"the bus actor {name!r} failed to start", name=name) from None
    except ray.exceptions.RayActorError as exc:
        raise HivememError(f"the bus actor {name!r} failed to start: {exc}", name=name) from exc


def _launch(
    config: StoreConfig,
    secret: bytes,
    name: str,
    namespace: str,
    launch: BusLaunch,
    num_cpus: float = 0,
    placement: Any = "SPREAD",
) -> Any:
    remote = ray.remote(num_cpus=num_cpus, max_restarts=0)(BusActor)
    return remote.options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        scheduling_strategy=placement,
        lifetime="detached" if launch.detached else None,
    ).remote(config.model_dump_json(), secret, launch)


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
    """Start the ``shards`` servers of a sharded bus at once, as actors ``{name}-{i}``,
    or join those serving under these names.

    Shards joined must serve the bus asked for, as in :func:`start_bus_actor` (same
    ``config``, ``secret``, shard index and count, ``metrics``, ``spin_us``): leftovers of
    another bus under the names would mix two secrets and hand out the same ids on two
    shards. On any difference the shards this call started are killed and nothing is
    joined.

    They share ``secret`` (a token is valid on every shard), and spread over the
    cluster's nodes (:func:`spread_placement`). With ``metrics`` each serves
    ``hivemem_bus_*`` on a free port of its node; ``spin_us`` is each server's busy
    polling after an answer (:class:`~hivemem.memory_bus.server.BusServer`). Returns
    the actor handles, their addresses (``address``, ``pub``, ``node``, ``metrics``) in
    shard order, the order clients route by, and the placement group to release with
    :func:`remove_placement` once the shards are stopped (None if every shard was
    joined: they stay in the group of the call that started them).

    Raises:
        ConfigError: an actor under one of the names serves another bus; the message
            names the actor and what differs.
        HivememError: a shard failed to start.
    """
    group, placement = spread_placement(shards)
    launches = [
        BusLaunch(shard=(i, shards), metrics=metrics, spin_us=spin_us) for i in range(shards)
    ]
    actors: list[Any] = []
    new: list[Any] = []  # what this call started, and ends if the bus cannot be served
    try:
        for i, launch in enumerate(launches):
            actor, started = _start_or_join(
                config, secret, f"{name}-{i}", namespace, launch, placement=placement[i]
            )
            actors.append(actor)
            new += [actor] if started else []
        config_json = config.model_dump_json()
        asked = [
            a.serves.remote(config_json, secret, b) for a, b in zip(actors, launches, strict=True)
        ]
        for i, differs in enumerate(ray.get(asked)):
            if differs:
                raise _another_bus(f"{name}-{i}", namespace, differs)
        found: list[dict[str, str]] = ray.get([a.addresses.remote() for a in actors])
    except BaseException as exc:
        for actor in new:  # the shards this call started serve no bus anyone can use
            ray.kill(actor, no_restart=True)
        remove_placement(group)
        if isinstance(exc, ray.exceptions.RayError):
            raise HivememError(f"the shards of bus {name!r} failed to start: {exc}") from exc
        raise
    if not new:  # every shard joined: they stay in the group of the call that started them
        remove_placement(group)
        group = None
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
    """The serving bus actor of that name and its addresses.

    Raises:
        ValueError: no actor of that name (Ray's error).
        HivememError: the actor of that name died or its bus was stopped (its address
            would answer nothing; :func:`start_bus_actor` replaces it).
    """
    actor: Any = ray.get_actor(name, namespace=namespace)
    if not _serving(actor):
        raise HivememError(
            f"the bus actor {name!r} (Ray namespace {namespace!r}) died or was stopped",
            name=name,
        )
    addresses: dict[str, str] = ray.get(actor.addresses.remote())
    return actor, addresses
