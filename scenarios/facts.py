"""Shared pieces of the fact-and-question families: keys, values, texts, questions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hivemem.agents.base import AgentSpec, Observation

ATTRIBUTES = ["colour", "city", "owner", "vault", "route", "signal", "plant", "sport"]
VALUES = [
    "amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor",
    "indigo", "juniper", "krypton", "lagoon", "meadow", "nickel", "onyx", "pepper",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Key:
    """One fact's subject: an attribute of an entity."""

    entity: int
    attribute: int

    @property
    def name(self) -> str:
        return f"e{self.entity}.{ATTRIBUTES[self.attribute]}"


def fact(key: Key, value: str, t: int, importance: float = 0.0) -> dict[str, Any]:
    """A fact as agents observe it."""
    attr = ATTRIBUTES[key.attribute]
    return {
        "key": key.name,
        "value": value,
        "text": f"the {attr} of entity e{key.entity} is {value}",
        "t": float(t),
        "importance": float(importance),
    }


def question(key: Key, qid: int, as_of: float | None = None) -> dict[str, Any]:
    """A question about ``key`` (its value now, or at ``as_of``)."""
    attr = ATTRIBUTES[key.attribute]
    return {
        "qid": qid,
        "key": key.name,
        "text": f"the {attr} of entity e{key.entity} is",
        "as_of": as_of,
    }


FactTick = tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]
"""One tick of a fact-and-question family: the facts observed, then each asked agent's
question (by agent id)."""


def all_keys(entities: int, attributes: int) -> list[Key]:
    """Every (entity, attribute) pair, in a fixed order."""
    return [Key(e, a) for e in range(entities) for a in range(attributes)]


def deal(
    facts: list[dict[str, Any]],
    observers: list[AgentSpec],
    questions: dict[str, dict[str, Any]],
    copies: int = 1,
) -> dict[str, Observation]:
    """One tick's observations: facts dealt round-robin to ``observers``, questions to theirs.

    With ``copies`` > 1 each fact goes to that many consecutive observers (redundant
    witnesses, who will all propose it).
    """
    obs: dict[str, Observation] = {}
    if observers:
        for i, f in enumerate(facts):
            for c in range(min(copies, len(observers))):
                spec = observers[(i + c) % len(observers)]
                obs.setdefault(spec.agent_id, {"facts": []})["facts"].append(f)
    for aid, q in questions.items():
        obs.setdefault(aid, {})["question"] = q
    return obs
