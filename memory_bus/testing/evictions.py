"""Evictions by their definition, to check (and time) the store's own way against."""

from __future__ import annotations

import numpy as np
from hivemem.memory_bus.features import candidate_features
from hivemem.memory_bus.interfaces import EvictionContext, EvictionPolicy
from hivemem.memory_bus.item import Item


def evictions_by_definition(
    items: dict[int, Item],
    batch: list[Item],
    policy: EvictionPolicy,
    now: float,
    capacity: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Add ``batch`` to ``items`` (changed in place) one item at a time, each evicting
    while there are more than ``capacity``, every victim chosen from a feature matrix of
    every other item built afresh: what :class:`hivemem.memory_bus.candidates.CandidatePool`
    must agree with, and the store's way before it.

    Returns:
        The ids each item of ``batch`` evicted.
    """
    strength = float(getattr(policy, "strength", 10.0))
    out = []
    for item in batch:
        items[item.id] = item
        victims = []
        while len(items) > capacity:
            candidates = [it for it in items.values() if it.id != item.id]
            features = candidate_features(candidates, now, context=item.vector, strength=strength)
            ctx = EvictionContext(now=now, rng=rng, incoming=item)
            victim = candidates[policy.select(candidates, features, 1, ctx)[0]]
            victims.append(victim.id)
            del items[victim.id]
        out.append(victims)
    return out
