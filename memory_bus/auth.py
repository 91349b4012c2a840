"""Who a request comes from: per-agent tokens and the agent registry.

A token is the HMAC-SHA256 of the agent id under the bus secret, so the server checks it
without storing tokens, and a token leaks nothing about other agents. Groups and role are
never taken from the client: the server looks them up in its registry, which only the
admin (the runner) may change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.protocol import ADMIN_AGENT, Code, ProtocolError


def new_secret() -> bytes:
    """A fresh random bus secret."""
    return secrets.token_bytes(32)


def token_for(secret: bytes, agent_id: str) -> str:
    """The token of ``agent_id`` under ``secret``."""
    return hmac.new(secret, agent_id.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class AgentRegistry:
    """Agents known to the bus, with their groups and role.

    Attributes:
        listeners: Called with an agent's id after its groups or role may have changed
            (the event feed re-checks that agent's live subscriptions).
    """

    secret: bytes
    agents: dict[str, Caller] = field(default_factory=dict)
    listeners: list[Callable[[str], object]] = field(
        default_factory=list, repr=False, compare=False
    )

    def register(
        self, agent_id: str, groups: list[str] | frozenset[str] = frozenset(), role: str = "agent"
    ) -> str:
        """Add or replace an agent; returns its token.

        Raises:
            InvalidInputError: an empty id (no request can authenticate as it).
        """
        if not agent_id:
            raise InvalidInputError("agent_id", "an agent's id cannot be empty")
        self.agents[agent_id] = Caller(agent_id, frozenset(groups), role)
        self._changed([agent_id])
        return token_for(self.secret, agent_id)

    def authenticate(self, agent_id: str, token: str) -> Caller:
        """The caller for a request, or an ``unauthenticated`` error.

        An agent with a valid token that was never registered may use its private
        namespace only (no groups).
        """
        if not agent_id or not hmac.compare_digest(
            token.encode(), token_for(self.secret, agent_id).encode()
        ):
            raise ProtocolError(
                Code.UNAUTHENTICATED,
                f"bad or missing token for agent {agent_id!r}",
                agent_id=agent_id,
            )
        return self.agents.get(agent_id, Caller(agent_id))

    def is_admin(self, caller: Caller) -> bool:
        """Whether the caller is the bus administrator."""
        return caller.agent_id == ADMIN_AGENT

    def to_state(self) -> list[list[object]]:
        """The registry, msgpack-safe."""
        return [[c.agent_id, sorted(c.groups), c.role] for c in self.agents.values()]

    def load(self, state: list[list[object]]) -> None:
        """Restore :meth:`to_state`."""
        before = set(self.agents)
        self.agents = {str(a): Caller(str(a), frozenset(g), str(r)) for a, g, r in state}  # type: ignore[call-overload]
        self._changed(sorted(before | set(self.agents)))  # those dropped lose their groups

    def _changed(self, agent_ids: list[str]) -> None:
        for agent_id in agent_ids:
            for listener in self.listeners:
                listener(agent_id)
