"""Evictions by their definition, to check (and time) the store's own way against.

:func:`check_eviction_policy` is the check a user runs over an eviction policy of their
own: it must evict, through a real namespace, what it would evict from a feature matrix
built afresh for each eviction. That is what the optional attributes (``row_keys``,
``feature_columns``, ``uses_relevance``) promise the store; a policy that claims more
than is true fails it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import cast

import numpy as np
from hivemem.memory_bus.config import TierConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.features import candidate_features
from hivemem.memory_bus.interfaces import EvictionContext, EvictionPolicy
from hivemem.memory_bus.item import Item, TierName
from hivemem.memory_bus.testing.failures import ContractFailure, expect
from hivemem.memory_bus.victims import selected_positions


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
            ids = np.array([it.id for it in candidates], dtype=np.int64)
            ctx = EvictionContext(now=now, rng=rng, incoming=item, ids=ids)
            victim = candidates[_one_position(policy, candidates, features, ctx)]
            victims.append(victim.id)
            del items[victim.id]
        out.append(victims)
    return out


def _one_position(
    policy: EvictionPolicy, candidates: list[Item], features: np.ndarray, ctx: EvictionContext
) -> int:
    """The one position ``policy.select`` answers when asked for one victim, or a
    :class:`ContractFailure` saying what it did instead (raised, or answered other)."""
    try:
        chosen = policy.select(candidates, features, 1, ctx)
    except Exception as exc:
        raise ContractFailure(f"select raised {type(exc).__name__}: {exc}") from exc
    positions = selected_positions(chosen, len(candidates), 1)
    expect(
        positions is not None,
        f"select(n=1) among {len(candidates)} candidates answered {chosen!r}: it must "
        f"return a list of one position in 0..{len(candidates) - 1}",
    )
    return cast(list[int], positions)[0]


def check_eviction_policy(
    make: Callable[[], EvictionPolicy],
    *,
    steps: int = 60,
    capacity: int = 30,
    dim: int = 8,
    seed: int = 7,
) -> None:
    """Raise ``ContractFailure`` unless a full namespace evicting with the policy picks the
    victims :func:`evictions_by_definition` picks, write after write.

    Writes of 2-11 items, and every fourth of one item (the namespace then evicts
    without a pool), arrive at times 0, 1, ...; before each, a few items are recalled
    (hits and last access move), so policies reading those columns see them change. Ties
    are common (a write's items share their time), so the tie rule is checked too.

    Args:
        make: Makes the policy (called once).
        steps: Writes.
        capacity: The namespace's capacity.
        dim: Vector dimension.
        seed: Seeds the items and the recalls.
    """
    from hivemem.memory_bus.namespace import Namespace

    rng = np.random.default_rng(seed)
    policy = make()
    config = TierConfig(capacity=capacity)
    ns = Namespace(TierName.PRIVATE, "a", config, dim, policy, np.random.default_rng(1))
    model: dict[int, Item] = {}
    next_id = 1
    for step in range(steps):
        now = float(step)
        for it in rng.choice(sorted(model), size=min(5, len(model)), replace=False).tolist():
            for item in (ns.items[it], model[it]):  # recalls move hits and accessed
                item.hits += 1
                item.accessed = now
        batch = []
        for _ in range(1 if step % 4 == 3 else int(rng.integers(2, 12))):
            vector = rng.normal(size=dim).astype(np.float32)
            batch.append(
                Item(
                    next_id,
                    TierName.PRIVATE,
                    "a",
                    " ".join(["w"] * int(rng.integers(1, 6))),
                    vector / np.linalg.norm(vector),
                    importance=float(rng.random()),
                    created=now,
                    accessed=now,
                )
            )
            next_id += 1
        want = evictions_by_definition(
            model, copy.deepcopy(batch), policy, now, capacity, np.random.default_rng(0)
        )
        try:
            got = ns.add_many(batch, now, None, lambda event: None)
        except HivememError as exc:  # the store's own refusal of what the policy did
            raise ContractFailure(f"write {step}: the namespace refused it: {exc}") from exc
        expect(
            got == want,
            f"write {step}: the namespace evicted {got}, by definition {want} (a policy "
            "must choose by the candidates' features or ids: their order in the store is "
            "not the definition's)",
        )
        expect(sorted(ns.items) == sorted(model), f"write {step}: the items differ")
