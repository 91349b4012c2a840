"""Agent types for tests of the runner's failure paths.

Shipped with the package, as :mod:`hivemem.memory_bus.testing` is, because a host is a
Ray actor in another process: only an importable ``"module:Class"`` reaches it.
"""

from __future__ import annotations

from hivemem.agents.base import AgentSpec, BaseAgent
from hivemem.memory_bus.errors import ConfigError


class UnbuildableAgent(BaseAgent):
    """Refuses to be built, whatever its params: a scenario naming it
    (``type: hivemem.agents.testing:UnbuildableAgent``) validates, and its run stops as
    the hosts build their agents (the path a custom agent type's own checks take)."""

    def __init__(self, spec: AgentSpec) -> None:
        raise ConfigError(f"agent {spec.agent_id!r}: this agent type refuses to be built")
