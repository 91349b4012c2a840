"""The agent hosts of a run, each given a contiguous block of the roster: Ray actors with
restart-and-retry around every call (:class:`AgentHosts`), or plain objects in this
process (:class:`LocalHosts`).

This is the fault handling of the host actors (a call made again on a restarted host, a
restart counted by process incarnation, a commit redone after its host died), kept apart
from :mod:`hivemem.platform.runner`, which drives the ticks and sees only the
``step``/``commit``/``close``/``restarts``/``nodes`` interface that the in-process pool
offers too (RL episodes, :mod:`hivemem.platform.rl.sim`, and the plug-in checks,
:mod:`hivemem.platform.testing`, run the real runner on it without Ray). It also
holds what the runner's bus shares with the hosts: :data:`BUS_CHECK_S` and
:func:`logged`, and the check that a Ray address has a cluster behind it
(:func:`check_ray_address`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hivemem.agents.base import AgentSpec
from hivemem.agents.host import AgentHost
from hivemem.memory_bus.config import EmbedderConfig
from hivemem.memory_bus.errors import ConfigError, HivememError
from hivemem.memory_bus.server import serving_at
from hivemem.scenarios.families import BUILTIN_MODULES

log = logging.getLogger(__name__)


BUS_CHECK_S = 2.0
"""Seconds without a host's answer before the runner checks that the bus lives, and the
longest it waits for a bus actor's answer to that check."""

HOST_CLOSE_WAIT_S = 2.0
"""Seconds a closing run waits for its agent hosts to close before killing them."""


def logged(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``call(*args, **kwargs)``; a failure is logged, not raised (cleanup goes on)."""
    try:
        call(*args, **kwargs)
    except Exception:
        log.warning("%s failed", what, exc_info=True)


def _got(ref: Any) -> Any:
    """``ray.get(ref)``; a hivemem error raised in the host is raised here as itself, not
    wrapped in Ray's ``RayTaskError`` (whose message is the host's whole traceback)."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, HivememError):
            raise exc.cause from exc
        raise


def _collect(refs: list[Any]) -> None:
    """Take the results of ``refs`` that come within :data:`BUS_CHECK_S`, errors and all:
    Ray logs an error it holds that nobody took (another host's, when one host's error
    stops the run) with its whole traceback."""
    import ray

    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=BUS_CHECK_S)
    for ref in ready:
        with contextlib.suppress(Exception):
            ray.get(ref)


def split(specs: list[AgentSpec], hosts: int) -> list[list[AgentSpec]]:
    """Contiguous blocks of nearly equal size, in order (the commit order relies on it)."""
    n = len(specs)
    bounds = [round(i * n / hosts) for i in range(hosts + 1)]
    return [specs[bounds[i] : bounds[i + 1]] for i in range(hosts)]


class AgentHosts:
    """The host actors of a run, with restart-and-retry around every call.

    ``bus_alive`` (the runner's ``_Bus.check_alive``) is called whenever a host is silent for
    :data:`BUS_CHECK_S` or fails, and raises if the bus is gone: a host waiting on a dead
    bus would otherwise fail only after its client's timeouts and retries (3 x 60 s).
    """

    def __init__(
        self,
        blocks: list[list[AgentSpec]],
        address: str,
        tokens: dict[str, str],
        dim: int,
        run_id: str,
        embedder: EmbedderConfig | None = None,
        bus_alive: Callable[[], None] | None = None,
    ) -> None:
        from hivemem.agents.host import host_actor_class
        from hivemem.memory_bus.ray_actor import spread_placement

        cls = host_actor_class()
        self._group, placement = spread_placement(len(blocks))
        self.handles = [
            cls.options(
                name=f"hivemem-host-{run_id}-{i}",
                namespace="hivemem",
                scheduling_strategy=placement[i],
            ).remote(
                address,
                block,
                {s.agent_id: tokens[s.agent_id] for s in block},
                dim,
                BUILTIN_MODULES,
                client_id=int(run_id, 16) * 4096 + i,
                embedder=embedder,
            )
            for i, block in enumerate(blocks)
        ]
        self.members = [{s.agent_id for s in block} for block in blocks]
        self.restarts = 0
        self._bus_alive = bus_alive
        self._parts: list[dict[str, Any]] = []
        self._stepped_by: list[str] = []
        try:
            infos = [self._result(h.info.remote()) for h in self.handles]
        except BaseException:
            self.close()  # hosts that did start would outlive the failed run
            raise
        self.nodes = [i["node"] for i in infos]
        self._incarnation = [i["incarnation"] for i in infos]

    def _seen(self, i: int, result: dict[str, Any]) -> dict[str, Any]:
        """Count a restart whenever host ``i`` answers from a new process.

        Counting by incarnation, not by ``RayActorError``, also counts a restart that
        Ray finished before the next call arrived (that call then simply succeeds).
        """
        if result["incarnation"] != self._incarnation[i]:
            self.restarts += 1
            self._incarnation[i] = result["incarnation"]
        return result

    def _result(self, ref: Any) -> Any:
        """``ray.get(ref)``, checking the bus (``bus_alive``) while the host is silent and
        when it fails, so that a dead bus fails the run at once, with its own error."""
        import ray
        from ray.exceptions import RayActorError

        if self._bus_alive is None:
            return _got(ref)
        while not ray.wait([ref], timeout=BUS_CHECK_S)[0]:
            self._bus_alive()
        try:
            return _got(ref)
        except RayActorError:
            raise  # the host died: the caller restarts it
        except Exception:
            self._bus_alive()
            raise

    def _call(self, i: int, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError

        for attempt in range(30):
            try:
                return self._seen(i, self._result(getattr(self.handles[i], method).remote(*args)))
            except RayActorError:
                if attempt == 29:
                    raise
                time.sleep(min(0.2 * (attempt + 1), 2.0))
        raise AssertionError("unreachable")

    def step(self, t: int, obs: dict[str, Any]) -> list[dict[str, Any]]:
        from ray.exceptions import RayActorError

        parts = [{a: o for a, o in obs.items() if a in m} for m in self.members]
        self._parts = parts
        refs = [h.step.remote(t, part) for h, part in zip(self.handles, parts, strict=True)]
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(self._seen(i, self._result(ref)))
            except RayActorError:
                out.append(self._call(i, "step", t, parts[i]))
            except Exception:
                _collect(refs[i + 1 :])
                raise
        self._stepped_by = [r["incarnation"] for r in out]
        return out

    def commit(self, t: int) -> list[dict[str, Any]]:
        """Commit host after host: every host's writes, then every host's promotions
        (:data:`~hivemem.agents.host.COMMIT_PHASES`), so the bus sees them in one order
        whatever the number of hosts; one result per host, the two phases' stats summed.

        A host that died meanwhile lost what it kept: it is restarted, steps again (same
        observations) and commits again; its request ids are numbered by tick under a
        stable client id, so writes the bus had already applied are answered from the
        bus's memory, not applied twice, and the reads of the step done again, which the
        bus had already counted, are answered as looks, not counted twice (LFU/LRU
        evictions stay those of an undisturbed run)."""
        return commit_in_phases(lambda i, phase: self._commit_phase(i, t, phase), len(self.handles))

    def _commit_phase(self, i: int, t: int, phase: str) -> dict[str, Any]:
        """Host ``i``'s ``commit(t, phase)``, stepping again first if the host died since
        its step (the phases before ``phase`` were applied: a restart loses only what
        the host kept for the later ones)."""
        from ray.exceptions import RayActorError

        try:
            result = self._seen(i, self._result(self.handles[i].commit.remote(t, phase)))
        except RayActorError:
            result = None
        if result is not None and result["incarnation"] == self._stepped_by[i]:
            return result
        # died (and perhaps already restarted) since its step: step again first
        redo = self._call(i, "step", t, self._parts[i])
        result = self._call(i, "commit", t, phase)
        if result["incarnation"] != redo["incarnation"]:
            raise HivememError(f"agent host {i} keeps dying at tick {t}")
        self._stepped_by[i] = redo["incarnation"]
        return dict(result)

    def close(self) -> None:
        """Close every host (waiting at most :data:`HOST_CLOSE_WAIT_S`: a host stuck on a
        dead bus never gets to its close), then kill them all and release their group."""
        import ray
        from hivemem.memory_bus.ray_actor import remove_placement

        refs = [h.close.remote() for h in self.handles]
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=HOST_CLOSE_WAIT_S)
        for h in self.handles:
            logged("killing an agent host", ray.kill, h, no_restart=True)
        remove_placement(self._group)


class LocalHosts:
    """Agent hosts as plain objects in this process (the runner's host-pool interface).

    The bus runs in this process unless sharded: the hosts then hand it their requests
    without a socket (:class:`~hivemem.memory_bus.local_transport.LocalTransport`).
    """

    def __init__(
        self,
        blocks: list[list[AgentSpec]],
        address: str,
        tokens: dict[str, str],
        dim: int,
        run_id: str,
        embedder: EmbedderConfig | None = None,
    ) -> None:
        self.blocks, self.address, self.tokens = blocks, address, tokens
        self.dim, self.embedder = dim, embedder
        self.hosts = [self._host(block) for block in blocks]
        self.members = [{s.agent_id for s in block} for block in blocks]
        self.restarts = 0
        self.nodes = ["local"] * len(blocks)
        self.after_step: Callable[[int, LocalHosts], None] | None = None

    def _host(self, block: list[AgentSpec]) -> AgentHost:
        """A host of ``block``'s agents, given what a host actor is given."""
        return AgentHost(
            self.address,
            block,
            {s.agent_id: self.tokens[s.agent_id] for s in block},
            self.dim,
            BUILTIN_MODULES,
            in_process=serving_at(self.address) is not None,
            embedder=self.embedder,
        )

    def restart(self) -> None:
        """Close every host and build it anew from its specs, as Ray restarts a host
        actor whose process died (between two ticks: nothing kept is lost); counted in
        ``restarts``."""
        self.close()
        self.hosts = [self._host(block) for block in self.blocks]
        self.restarts += len(self.hosts)

    def step(self, t: int, obs: dict[str, Any]) -> list[dict[str, Any]]:
        """Phase 1 of the tick on every host."""
        out = [
            h.step(t, {a: o for a, o in obs.items() if a in m})
            for h, m in zip(self.hosts, self.members, strict=True)
        ]
        if self.after_step is not None:
            self.after_step(t, self)
        return out

    def commit(self, t: int) -> list[dict[str, Any]]:
        """Phase 2, in the order the Ray runner keeps: every host's writes, then every
        host's promotions."""
        return commit_in_phases(lambda i, phase: self.hosts[i].commit(t, phase), len(self.hosts))

    def close(self) -> None:
        """Close every host's bus client."""
        for h in self.hosts:
            h.close()


def commit_in_phases(
    commit: Callable[[int, str], dict[str, Any]], hosts: int
) -> list[dict[str, Any]]:
    """Every host's ``commit(i, phase)`` for each phase in turn (all hosts' writes, then
    all hosts' promotions: :data:`~hivemem.agents.host.COMMIT_PHASES`), so the bus sees
    one order whatever the number of hosts; one result per host, its phases' stats summed.
    A host whose last phase left nothing to promote (``promoting`` false: most scenarios
    have no graph) is not called again.
    """
    from hivemem.agents.host import COMMIT_PHASES

    out: list[dict[str, Any]] = [{} for _ in range(hosts)]
    for phase in COMMIT_PHASES:
        for i in range(hosts):
            if phase == "promotions" and not out[i].get("promoting", True):
                continue
            out[i] = _summed(out[i], commit(i, phase))
    return out


def _summed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two commit results of one host as one: ``b``'s, with the stats of both added up
    (numbers added, the dicts of counts added key by key)."""
    if not a:
        return b
    stats = dict(a["stats"])
    for key, value in b["stats"].items():
        if isinstance(value, dict):
            counts = dict(stats.get(key, {}))
            for k, v in value.items():
                counts[k] = counts.get(k, 0) + v
            stats[key] = counts
        else:
            stats[key] = stats.get(key, 0) + value
    return {**b, "stats": stats}


RAY_CONNECT_CHECK_S = 5.0
"""Seconds :func:`check_ray_address` waits for a TCP connection to a cluster's address."""

_HOST_PORT = re.compile(r"(?:ray://)?(\[[^\]]+\]|[^:/\[\]]+):(\d+)")


def check_ray_address(address: str, timeout: float = RAY_CONNECT_CHECK_S) -> None:
    """Raise at once if nothing listens at a Ray address of the ``host:port`` form.

    ``ray.init`` retries an address where no cluster answers for ever, printing only
    Ray's own warnings, so a mistyped ``--address`` hung ``hivemem run``. A cluster's
    GCS (``host:port``) and Ray Client server (``ray://host:port``) both take TCP
    connections, so one tried here tells at once. ``auto`` is checked where Ray would
    look (``RAY_ADDRESS``, then the session file ``ray start`` leaves); other forms
    (``local``, none found for ``auto``) are left to ``ray.init``, which answers them
    without waiting.

    Raises:
        ConfigError: the host does not resolve, or refuses or ignores the connection.
    """
    target = _auto_address() if address == "auto" else address
    match = _HOST_PORT.fullmatch(target or "")
    if match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster at {target} (check --address / RAY_ADDRESS)", address=target
        ) from exc


def _auto_address() -> str | None:
    """What ``ray.init(address="auto")`` would join: ``RAY_ADDRESS``, else the address
    in the session file of the latest ``ray start`` on this machine (None: none)."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env
    temp = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    session = Path(temp) / "ray" / "ray_current_cluster"
    try:
        return session.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
