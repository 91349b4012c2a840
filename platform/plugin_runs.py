"""What the plug-in checks (:mod:`hivemem.platform.testing`) share: a scenario run by the
real runner in this process, its errors as failures naming the tick, and answers compared.

A check runs :func:`~hivemem.platform.runner.run_once` on agent hosts in this process
(:class:`~hivemem.platform.host_pool.LocalHosts`, the same
:class:`~hivemem.agents.host.AgentHost` a Ray actor wraps) and an embedded bus, as an RL
episode does: the task observes and scores, the hosts ask their agents to plan and act,
read and write the bus, and every answer passes the run's own checks. The checks watch
the plug-in itself, never the loop: the plug-in under check is wrapped in a checking
twin (an agent type, a task) that the run builds and calls as it would the plug-in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.testing.failures import ContractFailure
from hivemem.platform.host_pool import LocalHosts
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.runner import RunResult, TickCallback, run_once
from hivemem.platform.scenario import Scenario, load_scenario
from hivemem.scenarios.base import Task

ScenarioLike = str | Path | Scenario
"""A scenario: a built-in name, a file, or one loaded (:func:`load_scenario`)."""


class BrokenPromise(HivememError):
    """A broken promise that a checking twin found while the run asked it.

    A hivemem error, so that the run's own checks of a plug-in's answers
    (:mod:`hivemem.agents.calls`, :mod:`hivemem.scenarios.calls`), which report any
    other error raised in a plug-in as the plug-in's own, pass it on as it is: the run
    stops, and :func:`run_checked` raises it as the ``ContractFailure`` it was.
    """


@contextmanager
def promising() -> Iterator[None]:
    """A ``ContractFailure`` raised within as a :class:`BrokenPromise` (in a twin)."""
    try:
        yield
    except ContractFailure as exc:
        raise BrokenPromise(str(exc)) from None


def as_scenario(scenario: ScenarioLike, ticks: int) -> Scenario:
    """The scenario, run for ``ticks`` ticks."""
    s = scenario if isinstance(scenario, Scenario) else load_scenario(str(scenario))
    return s.model_copy(update={"run": s.run.model_copy(update={"ticks": ticks})})


def run_checked(
    scenario: Scenario,
    *,
    which: str = "",
    task: Callable[[], Task] | None = None,
    hosts: int | None = None,
    pool: Callable[..., LocalHosts] = LocalHosts,
    restart: bool = False,
    on_tick: TickCallback | None = None,
    metrics: DriverMetrics | None = None,
) -> RunResult:
    """Run ``scenario`` with :func:`~hivemem.platform.runner.run_once` in this process.

    Args:
        scenario: The scenario.
        which: Said after the tick in a failure (`` (baseline agents)``).
        task: Builds the task to run (None: the scenario's own).
        hosts: Agent hosts (None: the scenario's number).
        pool: Builds the hosts (a :class:`LocalHosts`).
        restart: Restart every host before every tick but the first, as Ray restarts
            a host actor.
        on_tick: Called after each tick with its number and row.
        metrics: The driver's metrics, if the run is to keep them (the runner then asks
            the task its ``headline`` and ``outcome_kinds`` every tick).

    Raises:
        ContractFailure: a twin's check failed; the run refused a plug-in's answer,
            or the bus a request (naming the tick, or the building of the task and
            the agents); or a plug-in failed to be built.
    """
    started: list[int] = []

    def before_tick(t: int, hosts_now: LocalHosts) -> None:
        started.append(t)
        if restart and t > 0:
            hosts_now.restart()

    try:
        return run_once(
            scenario,
            task=None if task is None else task(),
            hosts=hosts,
            host_pool=pool,
            hooks={"before_tick": before_tick},
            on_tick=on_tick,
            metrics=metrics,
        )
    except (BrokenPromise, ContractFailure) as exc:
        raise ContractFailure(str(exc)) from None
    except Exception as exc:
        if started and not isinstance(exc, HivememError):
            raise
        where = f"tick {started[-1]}" if started else "building the task and the agents"
        said = str(exc) if isinstance(exc, HivememError) else f"raised {type(exc).__name__}: {exc}"
        raise ContractFailure(f"{where}{which}: {said}") from exc


def pickled(value: Any, what: str) -> bytes:
    """``value`` through cloudpickle, as Ray sends it between processes.

    Raises:
        ContractFailure: it cannot be pickled (naming ``what``).
    """
    try:
        return bytes(cloudpickle.dumps(value))
    except Exception as exc:
        raise ContractFailure(
            f"{what} cannot be pickled (Ray sends it between processes so): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def where_differ(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """Where two answers first differ (the path into them, both values), or None."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        parts: list[tuple[str, Any, Any]] = [
            (f".{f.name}", getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        ]
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        parts = [(f"[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))]
    elif isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        parts = [(f"[{k!r}]", a[k], b[k]) for k in a]
    else:
        return None if same(a, b) else (path, a, b)
    for step, x, y in parts:
        found = where_differ(x, y, path + step)
        if found is not None:
            return found
    return None


def said(differ: tuple[str, Any, Any] | None, one: str, other: str) -> str:
    """``differ`` (of :func:`where_differ`) as words: what each way answered."""
    path, a, b = differ or ("", None, None)
    return f"{path} was {a!r:.200} {one}, {b!r:.200} {other}"


def same(a: Any, b: Any) -> bool:
    """``a == b``, for values whose ``==`` may not answer a bool (arrays) too."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return repr(a) == repr(b)
