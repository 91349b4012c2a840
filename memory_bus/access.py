"""Access rules of the store: who may touch which tier, namespace and graph level.

A caller may touch its own private namespace (named after its agent id), the shared
and graph namespaces of its groups and any public namespace, and on the graph tier only
the levels its role allows. The bus authenticates the caller (tokens); this module only
decides what an authenticated caller may do.
"""

from __future__ import annotations

from hivemem.memory_bus.config import AccessConfig
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.item import TierName


class AccessPolicy:
    """Decides access from an :class:`AccessConfig`."""

    def __init__(self, config: AccessConfig | None = None) -> None:
        self.config = config or AccessConfig()
        self._public = frozenset(self.config.public_namespaces)
        self._levels = {
            role: frozenset(levels) for role, levels in self.config.graph_levels.items()
        }
        self._default_levels = frozenset(self.config.default_graph_levels)

    def may(self, caller: Caller, tier: TierName, namespace: str) -> bool:
        """Whether ``caller`` may touch ``tier``/``namespace`` at all."""
        if tier is TierName.PRIVATE:
            return namespace == caller.agent_id
        return namespace in caller.groups or namespace in self._public

    def levels(self, caller: Caller) -> frozenset[int]:
        """The graph levels ``caller``'s role may read and write."""
        return self._levels.get(caller.role, self._default_levels)

    def check(
        self,
        caller: Caller,
        tier: TierName,
        namespace: str,
        action: str = "access",
        level: int | None = None,
    ) -> None:
        """Raise :class:`AccessDeniedError` unless the access is allowed.

        Args:
            caller: Who asks.
            tier: The tier asked for.
            namespace: The namespace asked for.
            action: A verb for the message ("read", "write", ...).
            level: On the graph tier, the level of the node touched.
        """
        if not self.may(caller, tier, namespace):
            raise AccessDeniedError(caller.agent_id, tier.value, namespace, action)
        if level is not None and tier is TierName.GRAPH and level not in self.levels(caller):
            raise AccessDeniedError(
                caller.agent_id, tier.value, f"{namespace}@level{level}", action
            )
