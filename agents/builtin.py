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


def check_namespaces(tiers: list[str], group: str | None, groups: list[str]) -> None:
    """Raise ``ValueError`` if an agent that uses ``tiers`` would have no namespace on one
    of them (:func:`namespace_for`, which raised it at the run's first tick)."""
    used = sorted(set(tiers) & {"shared", "graph"})
    if used and group is None and not groups:
        raise ValueError(
            f"it uses the {used[0]} tier but has no group: give it groups or a group param"
        )


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
        try:
            settings = self.settings_of(spec.params)
        except ValueError as exc:  # the registry makes it a ConfigError: name the agent
            raise ValueError(f"agent {self.agent_id!r}: {exc}") from None
        self.write_tier, self.read_tiers, self.group, self.k, self.use_as_of = settings

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Refuse params no agent of this type could run with, building none: a scenario
        that sets them is refused as it is validated, not by the bus at the first tick
        (whose refusal failed every agent of the host)."""
        cls.settings_of(params)

    @classmethod
    def check_groups(cls, params: dict[str, Any], groups: list[str]) -> None:
        write_tier, read_tiers, group, _, _ = cls.settings_of(params)
        check_namespaces([write_tier, *read_tiers], group, groups)

    @staticmethod
    def settings_of(params: dict[str, Any]) -> tuple[str, list[str], str | None, int, bool]:
        """(write_tier, read_tiers, group, k, use_as_of) from ``params``, checked.

        Raises:
            TypeError: an unknown param. ValueError: a bad value (``k`` as the bus
                bounds a search's ``k``).
        """
        p = dict(params)
        write_tier = p.pop("write_tier", "shared")
        read_tiers = p.pop("read_tiers", [write_tier])
        group = p.pop("group", None)
        k = p.pop("k", 8)
        use_as_of = p.pop("use_as_of", True)
        if p:
            raise TypeError(f"unknown fact_memory params: {sorted(p)}")
        if write_tier not in (*TIERS, "none"):
            raise ValueError(f"write_tier must be one of {TIERS} or 'none', got {write_tier!r}")
        if not isinstance(read_tiers, list | tuple) or any(t not in TIERS for t in read_tiers):
            raise ValueError(f"read_tiers must be a list of {TIERS}, got {read_tiers!r}")
        if group is not None and not isinstance(group, str):
            raise ValueError(f"group must be a str, got {group!r}")
        if not isinstance(use_as_of, bool):
            raise ValueError(f"use_as_of must be true or false, got {use_as_of!r}")
        try:
            k = as_k(k)  # the bus's own bounds of a search's k
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None
        return write_tier, list(read_tiers), group, k, use_as_of

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
