"""A task's ``observe``, ``score`` and ``summary`` called for the runner, their answers
checked.

A task family of one's own (``task.family: "module:Class"``) that raised, or answered
something else than :class:`~hivemem.scenarios.base.Task` says, ended the run with a
traceback from the runner or an agent host (an ``AttributeError``, a ``ValueError`` of
``float()``) naming no task; an observation of an agent the run does not have was
dropped unseen. Each is a :class:`~hivemem.memory_bus.errors.ConfigError` naming the
family, the method and the answer now (the run's one ``stopped (error: ...)`` line),
as :mod:`hivemem.agents.calls` does for agents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Set
from numbers import Real
from typing import Any

from hivemem.agents.base import Observation
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.registry import plugin_answered, plugin_failed
from hivemem.scenarios.base import Task

OBSERVATIONS = "a dict of observations (dicts) by agent id"
COUNTERS = "a dict of counters (finite numbers) by name"
HEADLINE = "a pair of finite numbers (correct answers, questions)"
MEASURES = "a dict of measures (finite numbers or None) by name, 'score' among them"


def observe_of(task: Task, family: str, t: int, agent_ids: Set[str]) -> dict[str, Observation]:
    """``task.observe(t)``, observations keyed by ids among ``agent_ids`` (the run's).

    Raises:
        ConfigError: the task raised, or answered something else.
    """
    obs = _asked(task, family, "observe", (t,), _observations, OBSERVATIONS)
    strangers = obs.keys() - agent_ids
    if strangers:
        stranger = min(strangers, key=str)
        raise ConfigError(
            f"task family {family!r}: observe answered an observation of {stranger!r}, "
            "not an agent of the run",
            family=family,
        )
    return obs


def score_of(task: Task, family: str, t: int, answers: dict[str, Any]) -> dict[str, float]:
    """``task.score(t, answers)``, this tick's counters (see :func:`_asked`)."""
    return _asked(task, family, "score", (t, answers), _counters, COUNTERS)


def summary_of(task: Task, family: str, totals: dict[str, float]) -> dict[str, float | None]:
    """``task.summary(totals)``, the measures with their ``score`` (see :func:`_asked`)."""
    return _asked(task, family, "summary", (totals,), _measures, MEASURES)


def headline_of(task: Task, family: str, parts: dict[str, float]) -> tuple[float, float]:
    """``task.headline(parts)``, the correct answers and the questions (for the driver's
    metrics only: a run without them never asks; see :func:`_asked`)."""
    pair = _asked(task, family, "headline", (parts,), _pair, HEADLINE)
    return float(pair[0]), float(pair[1])


def outcome_kinds_of(task: Task, family: str, parts: dict[str, float]) -> dict[str, float]:
    """``task.outcome_kinds(parts)``, the tick's parts under a fixed set of names (for the
    driver's metrics only; see :func:`_asked`)."""
    return _asked(task, family, "outcome_kinds", (parts,), _counters, COUNTERS)


def _asked(
    task: Task,
    family: str,
    method: str,
    args: tuple[Any, ...],
    fits: Callable[[Any], bool],
    wanted: str,
) -> Any:
    """``task.<method>(*args)``, if it answered what ``fits``.

    Raises:
        ConfigError: the task raised (naming its error), or answered something else
            (naming the answer and ``wanted``).
    """
    try:
        answer = getattr(task, method)(*args)
    except Exception as exc:
        plugin_failed(f"task family {family!r}: {method}", exc, family=family)
    if not fits(answer):
        plugin_answered(f"task family {family!r}: {method}", answer, wanted, family=family)
    return answer


def _observations(obs: Any) -> bool:
    return isinstance(obs, dict) and all(isinstance(o, dict) for o in obs.values())


def _counters(parts: Any) -> bool:
    return isinstance(parts, dict) and all(
        isinstance(k, str) and _finite(v) for k, v in parts.items()
    )


def _measures(summary: Any) -> bool:
    return (
        isinstance(summary, dict)
        and "score" in summary
        and all(v is None or _finite(v) for v in summary.values())
    )


def _pair(pair: Any) -> bool:
    return isinstance(pair, tuple | list) and len(pair) == 2 and all(map(_finite, pair))


def _finite(value: Any) -> bool:
    return isinstance(value, Real) and math.isfinite(value)
