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
from collections.abc import Set
from numbers import Real
from typing import Any, NoReturn

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
    try:
        obs = task.observe(t)
    except Exception as exc:
        _raised(family, "observe", exc)
    if not (isinstance(obs, dict) and all(isinstance(o, dict) for o in obs.values())):
        _refuse(family, "observe", obs, OBSERVATIONS)
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
    """``task.score(t, answers)``, this tick's counters.

    Raises:
        ConfigError: the task raised, or answered something else.
    """
    try:
        parts = task.score(t, answers)
    except Exception as exc:
        _raised(family, "score", exc)
    if not (isinstance(parts, dict) and all(_finite(v) for v in parts.values())):
        _refuse(family, "score", parts, COUNTERS)
    return parts


def summary_of(task: Task, family: str, totals: dict[str, float]) -> dict[str, float | None]:
    """``task.summary(totals)``, the measures with their ``score``.

    Raises:
        ConfigError: the task raised, or answered something else.
    """
    try:
        summary = task.summary(totals)
    except Exception as exc:
        _raised(family, "summary", exc)
    if not (
        isinstance(summary, dict)
        and "score" in summary
        and all(v is None or _finite(v) for v in summary.values())
    ):
        _refuse(family, "summary", summary, MEASURES)
    return summary


def headline_of(task: Task, family: str, parts: dict[str, float]) -> tuple[float, float]:
    """``task.headline(parts)``, the correct answers and the questions (for the driver's
    metrics only: a run without them never asks).

    Raises:
        ConfigError: the task raised, or answered something else.
    """
    try:
        pair = task.headline(parts)
    except Exception as exc:
        _raised(family, "headline", exc)
    if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(map(_finite, pair))):
        _refuse(family, "headline", pair, HEADLINE)
    return float(pair[0]), float(pair[1])


def outcome_kinds_of(task: Task, family: str, parts: dict[str, float]) -> dict[str, float]:
    """``task.outcome_kinds(parts)``, the tick's parts under a fixed set of names (for the
    driver's metrics only).

    Raises:
        ConfigError: the task raised, or answered something else.
    """
    try:
        kinds = task.outcome_kinds(parts)
    except Exception as exc:
        _raised(family, "outcome_kinds", exc)
    if not (
        isinstance(kinds, dict) and all(isinstance(k, str) and _finite(v) for k, v in kinds.items())
    ):
        _refuse(family, "outcome_kinds", kinds, COUNTERS)
    return kinds


def _finite(value: Any) -> bool:
    return isinstance(value, Real) and math.isfinite(value)


def _raised(family: str, method: str, exc: Exception) -> NoReturn:
    plugin_failed(f"task family {family!r}: {method}", exc, family=family)


def _refuse(family: str, method: str, answer: Any, wanted: str) -> NoReturn:
    plugin_answered(f"task family {family!r}: {method}", answer, wanted, family=family)
