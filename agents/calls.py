"""An agent's ``plan`` and ``act`` called for its host, their answers checked.

An agent type of one's own that raised, or answered something else than the protocol
says (a dict for a :class:`~hivemem.agents.base.Recall`, ``None`` or a bare answer for
an :class:`~hivemem.agents.base.Action`), failed the run with an ``AttributeError``
raised in the host's own code, naming neither the agent nor its type. Either is a
:class:`~hivemem.memory_bus.errors.ConfigError` naming both now (the run's one
``stopped (error: ...)`` line); the agent's own error is its cause, its traceback logged
on the host for the author.
"""

from __future__ import annotations

from typing import Any, NoReturn

from hivemem.agents.base import (
    Action,
    Agent,
    AgentSpec,
    Observation,
    Promotion,
    Proposal,
    Recall,
    make_agent,
)
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.registry import plugin_answered, plugin_failed


def build_of(spec: AgentSpec) -> Agent:
    """The agent ``spec`` names, built (:func:`~hivemem.agents.base.make_agent`).

    A constructor of one's own that raised (a ``KeyError`` on a param, say) ended a run
    with Ray's ``ActorDiedError`` and the whole traceback of the run command, naming no
    agent; it is a :class:`~hivemem.memory_bus.errors.ConfigError` naming the agent and
    its type now, which a host keeps and raises on its first call.

    Raises:
        ConfigError: the type is unknown, refused its params, or raised.
    """
    try:
        return make_agent(spec)
    except Exception as exc:
        plugin_failed(
            f"agent {spec.agent_id!r} (type {spec.type!r}): building it", exc, agent=spec.agent_id
        )


def plan_of(agent: Agent, t: float, obs: Observation) -> list[Recall]:
    """``agent.plan(t, obs)``, a list of :class:`Recall`.

    Raises:
        ConfigError: the agent raised, or answered something else.
    """
    try:
        plan = agent.plan(t, obs)
    except Exception as exc:
        _raised(agent, "plan", exc)
    if not isinstance(plan, list | tuple) or not all(isinstance(r, Recall) for r in plan):
        _refuse(agent, "plan", plan, "a list of Recall")
    return list(plan)


def act_of(agent: Agent, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
    """``agent.act(t, obs, recalled)``, an :class:`Action` of proposals and promotions.

    Raises:
        ConfigError: the agent raised, or answered something else.
    """
    try:
        action = agent.act(t, obs, recalled)
    except Exception as exc:
        _raised(agent, "act", exc)
    if not (
        isinstance(action, Action)
        and all(isinstance(w, Proposal) for w in action.writes)
        and all(isinstance(p, Promotion) for p in action.promotions)
    ):
        _refuse(agent, "act", action, "an Action (writes: Proposal, promotions: Promotion)")
    return action


def who(agent: Agent) -> str:
    """How errors name an agent: its id and its type's name."""
    spec = agent.spec
    return f"agent {spec.agent_id!r} (type {spec.type!r})"


def _raised(agent: Agent, method: str, exc: Exception) -> NoReturn:
    plugin_failed(f"{who(agent)}: {method}", exc, agent=agent.spec.agent_id)


def _refuse(agent: Agent, method: str, answer: Any, wanted: str) -> NoReturn:
    plugin_answered(f"{who(agent)}: {method}", answer, wanted, agent=agent.spec.agent_id)
