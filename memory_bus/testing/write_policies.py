"""The check a user runs over a write policy of their own: :func:`check_write_policy`.

A write policy decides ADD / UPDATE / DELETE / NOOP for each proposed item, given its
nearest neighbours. The store trusts two optional attributes to skip work:
``always_adds = True`` (a batch is stored whole, no decision asked per row) and
``needs_neighbours = False`` (no neighbour search: ``decide`` gets none). A policy that
claims either falsely stores what it would not have decided; one whose decision depends
on how the proposals were batched, or that changes what it is given, gives a bus
results that depend on how clients send them.

So the check writes one history into two real stores: the reference asks the policy
for every proposal, one write at a time, with its real neighbours (its claims hidden);
the other runs the policy as it is, the same proposals sent as batches. Both must decide
the same operations and end holding the same items.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.interfaces import Caller, Hit, WriteDecision, WritePolicy, WriteRequest
from hivemem.memory_bus.item import Item, NewItem
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.failures import ContractFailure, expect
from hivemem.memory_bus.testing.replay import first_difference, logical_state

FACTS = [
    ("vault", "the vault code is {}"),
    ("key", "the red key is under door {}"),
    ("guard", "the guard changes at hour {}"),
    ("boat", "the boat leaves from pier {}"),
]
"""Facts a history proposes again and again, some revised (another number), some
repeated word for word, some with their key in ``meta``."""


class _Reference:
    """The policy under test with its claims hidden: asked for every proposal, given its
    neighbours, and watched for changing what it is given or answering a call twice
    otherwise (:attr:`broken` says how; the store is left to go on)."""

    def __init__(self, policy: WritePolicy) -> None:
        self.policy = policy
        self.name = policy.name
        self.broken: str | None = None

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        before = _given(proposal, neighbours)
        decision = self.policy.decide(proposal, neighbours, now)
        if _given(proposal, neighbours) != before:
            self.broken = self.broken or (
                f"decide changed the proposal or its neighbours at time {now}: the store's "
                "items are given, not copies"
            )
        again = self.policy.decide(proposal, neighbours, now)
        if again != decision:
            self.broken = self.broken or (
                f"decide answered {decision!r}, then {again!r} for the same proposal, "
                f"neighbours and time {now}: a bus replaying its journal, or a run on more "
                "hosts, needs the same answer"
            )
        return decision


def check_write_policy(
    make: Callable[[], WritePolicy],
    *,
    steps: int = 40,
    dim: int = 32,
    seed: int = 7,
    neighbours: int = 5,
) -> dict[str, int]:
    """Raise ``ContractFailure`` unless the policy decides, through a real store, as it
    does asked one proposal at a time with its real neighbours.

    Each step proposes 1-6 items to one namespace at time ``step``: facts from
    :data:`FACTS`, with numbers drawn from a few, so proposals repeat (word for word),
    revise (another number) or bring something new; half carry their fact's key in
    ``meta["key"]``. The texts are embedded by the store's default embedder, so a repeat
    has the same vector.

    Checked: every answer is a ``WriteDecision`` the store accepts (an UPDATE or DELETE
    of an item of the namespace); the same call answers the same and changes neither the
    proposal nor the neighbours; ``always_adds`` and ``needs_neighbours`` are true of
    the decisions; and batches decide as their rows one by one.

    Args:
        make: Makes the policy (called twice: one for each store).
        steps: Batches written.
        dim: Vector dimension.
        seed: Seeds the history.
        neighbours: Neighbours a decision is given (the tier's ``neighbours``).

    Returns:
        How many of each operation the policy decided (how much of it the history
        exercised).
    """
    rng = np.random.default_rng(seed)
    watched, policy = _Reference(make()), make()
    reference, tested = _store(dim, neighbours, watched), _store(dim, neighbours, policy)
    owner = Caller("alice")
    for step in range(steps):
        batch = [_proposal(rng) for _ in range(int(rng.integers(1, 7)))]
        requests = [WriteRequest(owner, "alice", p) for p in batch]
        want = []
        for request in copy.deepcopy(requests):  # one at a time
            want += _write(reference, [request], step)
            expect(watched.broken is None, f"write {step}: {watched.broken}")
        got = _write(tested, requests, step)
        expect(
            [(r.op, r.item_id) for r in got] == [(r.op, r.item_id) for r in want],
            f"write {step}: {_ops(got)} as a batch of {len(batch)}, {_ops(want)} one at a "
            "time with their neighbours" + _claims(policy),
        )
        diff = first_difference(logical_state(reference), logical_state(tested))
        expect(diff is None, f"write {step}: the stores differ at {diff}")
    return dict(reference.private.decisions)


def _store(dim: int, neighbours: int, policy: WritePolicy) -> MemoryStore:
    """A store whose private tier decides with ``policy``, named in errors as a scenario
    names a plug-in (``module:Class``)."""
    store = MemoryStore(StoreConfig(dim=dim, private=TierConfig(neighbours=neighbours)))
    tier = store.private
    kind = type(policy.policy if isinstance(policy, _Reference) else policy)
    named = f"{kind.__module__}:{kind.__qualname__}"
    tier.config = tier.config.model_copy(update={"write_policy": named})
    tier.write_policy = policy
    return store


def _proposal(rng: np.random.Generator) -> NewItem:
    key, template = FACTS[int(rng.integers(len(FACTS)))]
    meta = {"key": key} if rng.random() < 0.5 else {}
    return NewItem(template.format(int(rng.integers(3))), meta=meta)


def _write(store: MemoryStore, requests: list[WriteRequest], step: int) -> list[Any]:
    """The results of writing ``requests`` (at time ``step``) as one batch, or a
    ``ContractFailure`` naming what the store refused."""
    try:
        return store.private.write_many(requests, now=float(step))
    except ContractFailure:
        raise
    except HivememError as exc:  # the store's refusal of what the policy answered
        raise ContractFailure(f"write {step}: the store refused it: {exc}") from exc


def _ops(results: list[Any]) -> str:
    return "[" + ", ".join(f"{r.op.value} {r.item_id}" for r in results) + "]"


def _claims(policy: WritePolicy) -> str:
    """What the policy claims, said when a batch decided otherwise."""
    said = [
        f"{name} = {value!r}"
        for name, value in (
            ("always_adds", getattr(policy, "always_adds", None)),
            ("needs_neighbours", getattr(policy, "needs_neighbours", None)),
        )
        if value is not None
    ]
    return f" (the policy claims {' and '.join(said)})" if said else ""


def _given(proposal: Item, neighbours: Sequence[Hit]) -> list[Any]:
    """What ``decide`` is given, as plain values (vectors as bytes), to compare after."""
    return [copy.deepcopy(proposal.to_state())] + [
        (hit.id, hit.score, copy.deepcopy(hit.item.to_state())) for hit in neighbours
    ]


__all__ = ["FACTS", "check_write_policy"]
