"""Write policies: what a proposed memory does to the namespace (Memory-R1's operations).

Memory-R1 (Yan et al. 2025) has a memory manager choose, for each new piece of
information and the memories most similar to it, one of four operations:

- ``ADD``: store it as a new memory;
- ``UPDATE(target)``: fold it into an existing memory (the target's new version);
- ``DELETE(target)``: remove a memory it contradicts or makes obsolete;
- ``NOOP``: nothing new; store nothing.

The tier runs the policy inside the store (or the bus server), so two agents writing the
same fact never race: the second sees the first as a neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.interfaces import Hit, WriteDecision, WritePolicy
from hivemem.memory_bus.item import Item, WriteOp
from hivemem.memory_bus.registry import Registry

WRITE_POLICIES: Registry[WritePolicy] = Registry("write policy")


@WRITE_POLICIES.register("always_add")
class AlwaysAddPolicy:
    """Every proposal is a new memory (the usual vector-store behaviour)."""

    name = "always_add"
    needs_neighbours = False
    always_adds = True  # the tier may store a whole batch without asking row by row

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        """ADD."""
        return WriteDecision(WriteOp.ADD)


@WRITE_POLICIES.register("never")
class NeverWritePolicy:
    """Nothing is ever stored: the no-memory baseline."""

    name = "never"
    needs_neighbours = False

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        """NOOP."""
        return WriteDecision(WriteOp.NOOP)


@WRITE_POLICIES.register("dedup")
class DedupPolicy:
    """A similarity-threshold heuristic: skip duplicates, update what the proposal revises.

    In order: the best neighbour at ``duplicate_threshold`` or above with the same text
    is a duplicate (NOOP); a neighbour with the same ``meta[key_field]`` is the fact being
    revised (UPDATE the most similar one); a neighbour at ``update_threshold`` or above is
    updated; anything else is ADDed.
    """

    name = "dedup"
    needs_neighbours = True

    def __init__(
        self,
        duplicate_threshold: float = 0.97,
        update_threshold: float = 0.9,
        key_field: str = "key",
    ) -> None:
        for label, value in (("duplicate", duplicate_threshold), ("update", update_threshold)):
            # a bool is no threshold: True was taken for 1.0
            if isinstance(value, bool) or not isinstance(value, Real) or not -1 <= value <= 1:
                raise ConfigError(
                    f"dedup {label}_threshold must be a number in [-1, 1], got {value!r}"
                )
        if update_threshold > duplicate_threshold:
            raise ConfigError("dedup update_threshold must not exceed duplicate_threshold")
        self.duplicate_threshold = float(duplicate_threshold)
        self.update_threshold = float(update_threshold)
        if not isinstance(key_field, str):  # meta keys are str: any other never matched
            raise ConfigError(f"dedup key_field must be a str, got {key_field!r}")
        self.key_field = key_field

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        """Decide from the neighbours, best first; one no longer valid at ``now`` is the
        past, not a duplicate (a fact asserted again after it expired is new again)."""
        neighbours = [h for h in neighbours if h.item.valid_to > now]
        if not neighbours:
            return WriteDecision(WriteOp.ADD)
        best = neighbours[0]
        if best.score >= self.duplicate_threshold and best.item.text == proposal.text:
            return WriteDecision(WriteOp.NOOP, best.id)
        key = proposal.meta.get(self.key_field)
        if key is not None:
            same_key = [h for h in neighbours if h.item.meta.get(self.key_field) == key]
            if same_key:
                return WriteDecision(WriteOp.UPDATE, same_key[0].id)
        if best.score >= self.update_threshold:
            return WriteDecision(WriteOp.UPDATE, best.id)
        return WriteDecision(WriteOp.ADD)


def make_write_policy(name: str, **params: Any) -> WritePolicy:
    """A write policy by name (``always_add``, ``dedup``, ``never``) or ``"module:Class"``.

    Raises:
        ConfigError: what ``name`` makes has no ``decide`` (the first write failed).
    """
    policy = WRITE_POLICIES.create(name, **params)
    if not callable(getattr(policy, "decide", None)):
        raise ConfigError(f"write policy {name!r} has no decide(proposal, neighbours, now)")
    return policy
