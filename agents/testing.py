"""Agent types for tests of the runner's failure paths.

Shipped with the package, as :mod:`hivemem.memory_bus.testing` is, because a host is a
Ray actor in another process: only an importable ``"module:Class"`` reaches it.
"""

from __future__ import annotations

from hivemem.agents.base import AgentSpec, BaseAgent, Observation, Recall
from hivemem.memory_bus.errors import ConfigError


class UnbuildableAgent(BaseAgent):
    """Refuses to be built, whatever its params: a scenario naming it
    (``type: hivemem.agents.testing:UnbuildableAgent``) validates, and its run stops as
    the hosts build their agents (the path a custom agent type's own checks take)."""

    def __init__(self, spec: AgentSpec) -> None:
        raise ConfigError(f"agent {spec.agent_id!r}: this agent type refuses to be built")


class TrespassingAgent(BaseAgent):
    """Reads, at every tick, the shared namespace of a group it is in nowhere
    (``elsewhere``): the bus refuses it on its host's first step. A scenario naming it
    validates (no file names that group), so this is the path of an error the bus raises
    in the middle of a run."""

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        return [Recall("shared", "elsewhere", "anything", k=1)]
