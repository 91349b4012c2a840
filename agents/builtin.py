"""Generic built-in agents for fact-and-question tasks.

The task shows an agent ``facts`` (``{"key", "value", "text", "t", "importance"}``) and
sometimes a ``question`` (``{"key", "text", "as_of"}``); the answer is a value. These
agents keep nothing in their own objects: all they know is on the bus.
"""

from __future__ import annotations

from typing import Any

from hivemem.agents.base import (
    AGENT_TYPES,
    Action,
    AgentSpec,
    BaseAgent,
    Observation,
    Proposal,
    Recall,
)
from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.validation import as_k

TIERS = ("private", "shared", "graph")
"""The tiers an agent may read and write."""


def namespace_for(spec: AgentSpec, tier: str, group: str | None) -> str:
    """An agent's namespace on ``tier``: its own id on private, else its (first) group."""
    if tier == "private":
        return spec.agent_id
    if group is not None:
        return group
    if not spec.groups:
        raise ValueError(f"agent {spec.agent_id!r} uses the {tier} tier but has no group")
    return spec.groups[0]


def best_answer(hits: list[Hit], key: str, as_of: float | None) -> Any:
    """The value of the newest recalled fact about ``key`` (at or before ``as_of``)."""
    best: tuple[float, Any] | None = None
    for hit in hits:
        meta = hit.item.meta
        if meta.get("key") != key or "value" not in meta:
            continue
        t = float(meta.get("t", hit.item.valid_from))
        if as_of is not None and t > as_of:
            continue
        if best is None or t > best[0]:
            best = (t, meta["value"])
    return None if best is None else best[1]


@AGENT_TYPES.register("fact_memory")
class FactMemoryAgent(BaseAgent):
    """Writes what it observes, recalls before it answers.

    Params:
        write_tier: ``private`` | ``shared`` | ``graph`` | ``none``.
        read_tiers: Tiers searched for a question.
        group: Shared/graph namespace (default: the agent's first group).
        k: Hits per recall.
        use_as_of: Ask the store for items valid at the question's time.
    """

    hit_vectors = False
    """It reads hits' meta only: its host asks the bus for hits without their vectors."""

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        p = dict(spec.params)
        self.write_tier: str = p.pop("write_tier", "shared")
        self.read_tiers: list[str] = p.pop("read_tiers", [self.write_tier])
        self.group: str | None = p.pop("group", None)
        self.k: int = p.pop("k", 8)
        self.use_as_of: bool = p.pop("use_as_of", True)
        if p:
            raise TypeError(f"unknown fact_memory params: {sorted(p)}")
        self._check_params()

    def _check_params(self) -> None:
        """Refuse bad params as the agent is built, naming it: the run stops before its
        first tick (the registry makes the ValueError a ``ConfigError``), not at the
        bus's refusal of the first request, which failed every agent of the host."""
        who = f"agent {self.agent_id!r}"
        if self.write_tier not in (*TIERS, "none"):
            raise ValueError(f"{who}: write_tier must be one of {TIERS} or 'none', got {self.write_tier!r}")  # fmt: skip
        if not isinstance(self.read_tiers, list | tuple) or any(
            t not in TIERS for t in self.read_tiers
        ):
            raise ValueError(f"{who}: read_tiers must be a list of {TIERS}, got {self.read_tiers!r}")  # fmt: skip
        self.read_tiers = list(self.read_tiers)
        if self.group is not None and not isinstance(self.group, str):
            raise ValueError(f"{who}: group must be a str, got {self.group!r}")
        if not isinstance(self.use_as_of, bool):
            raise ValueError(f"{who}: use_as_of must be true or false, got {self.use_as_of!r}")
        try:
            self.k = as_k(self.k)  # the bus's own bounds of a search's k
        except InvalidInputError as exc:
            raise ValueError(f"{who}: {exc}") from None

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        q = obs.get("question")
        if not q:
            return []
        as_of = q.get("as_of") if self.use_as_of else None
        return [
            Recall(tier, namespace_for(self.spec, tier, self.group), q["text"], self.k, as_of)
            for tier in self.read_tiers
        ]

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        action = Action()
        q = obs.get("question")
        if q:
            hits = [h for hits in recalled for h in hits]
            action.answer = best_answer(hits, q["key"], q.get("as_of"))
        if self.write_tier != "none":
            ns = namespace_for(self.spec, self.write_tier, self.group)
            for f in obs.get("facts", ()):
                action.writes.append(
                    Proposal(
                        self.write_tier,
                        ns,
                        f["text"],
                        {"key": f["key"], "value": f["value"], "t": f["t"]},
                        importance=float(f.get("importance", 0.0)),
                        valid_from=float(f["t"]),
                    )
                )
        return action


@AGENT_TYPES.register("no_memory")
class NoMemoryAgent(BaseAgent):
    """The baseline: answers only from what it observes in the same tick; writes nothing."""

    hit_vectors = False

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        q = obs.get("question")
        if not q:
            return Action()
        seen = [f for f in obs.get("facts", ()) if f["key"] == q["key"]]
        return Action(answer=seen[-1]["value"] if seen else None)
