"""How a bus actor is asked to serve (:class:`BusLaunch`), and what a caller joining it by
name must agree on: apart from :mod:`hivemem.memory_bus.ray_actor` because none of it
needs Ray (the actor and its starting do).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from hivemem.memory_bus.errors import ConfigError


@dataclass(frozen=True)
class BusLaunch:
    """How a bus actor was asked to serve: what a caller joining it by name must agree on.

    Attributes:
        host: Interface to bind; None: the node's IP.
        port: ROUTER port; 0: any free one.
        pub_port: PUB (events) port; 0: ``port + 1`` for a fixed ``port``, else any
            (:func:`default_pub_port`).
        data_dir: The journal's folder on the actor's node; None: memory only.
        shard: ``(index, count)`` of this server in a sharded bus.
        metrics: Whether the actor serves ``/metrics``.
        spin_us: Busy polling after each answer, in microseconds.
        detached: Whether the actor outlives the driver that started it.
    """

    host: str | None = None
    port: int = 0
    pub_port: int = 0
    data_dir: str | None = None
    shard: tuple[int, int] = (0, 1)
    metrics: bool = False
    spin_us: int = 0
    detached: bool = False

    def differences(self, running: BusLaunch, bound: dict[str, Any]) -> list[str]:
        """What ``running`` (a live actor's launch, ``bound`` to the host, ports and data
        dir it really has) has otherwise than this one asks.

        A host or port this one leaves open (None, 0) is any; one it names is compared
        with what the bus bound (its node's IP, the ports it chose); data directories
        are compared as real paths on the actor's node (``d/`` and ``x/../d`` are ``d``).
        Not asking ``detached`` joins either: a bus that outlives its starter loses nothing.
        """
        out = []
        for key, want in asdict(self).items():
            have = getattr(running, key)
            if key in ("host", "port", "pub_port", "detached"):
                if not want:
                    continue
                have = bound.get(key, have)
            elif key == "data_dir":
                want, have = real_path(want), bound["data_dir"]
            if want != have:
                out.append(f"{key} {have!r} (asked {want!r})")
        return out


def real_path(path: str | None) -> str | None:
    """``path`` as the real path on this node (None stays None)."""
    return None if path is None else os.path.realpath(path)


def port_of(address: str) -> int:
    """The port of a ``tcp://host:port`` address."""
    return int(address.rsplit(":", 1)[1])


def default_pub_port(port: int, pub_port: int | None) -> int:
    """The events port: ``pub_port`` if given, else ``port + 1`` for a fixed ``port`` (as
    ``hivemem bus serve`` does, so subscribers find a restarted bus), else any (0).

    Raises:
        ConfigError: ``port`` 65535 leaves no ``port + 1``.
    """
    if pub_port is not None:
        return pub_port
    if port == 65535:
        raise ConfigError("port 65535 leaves no port + 1 for events: give pub_port")
    return port + 1 if port else 0
