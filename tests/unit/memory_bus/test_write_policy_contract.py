"""check_write_policy: the built-in write policies pass it, and each kind of broken one fails
it, saying what it did."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hivemem.memory_bus.interfaces import Hit, WriteDecision
from hivemem.memory_bus.item import Item, WriteOp
from hivemem.memory_bus.policies.write import WRITE_POLICIES, DedupPolicy
from hivemem.memory_bus.testing import ContractFailure, check_write_policy


@pytest.mark.parametrize("name", ["always_add", "never", "dedup"])
def test_the_built_in_write_policies_keep_the_contract(name: str) -> None:
    decided = check_write_policy(lambda: WRITE_POLICIES.create(name))
    if name == "dedup":  # the history makes it decide each of its operations
        assert {op: decided.get(op, 0) > 0 for op in ("ADD", "UPDATE", "NOOP")} == {
            "ADD": True,
            "UPDATE": True,
            "NOOP": True,
        }
    else:
        assert set(decided) == {"ADD" if name == "always_add" else "NOOP"}


class ClaimsToAlwaysAdd(DedupPolicy):
    """dedup, claiming every proposal is an ADD: the store then stores batches whole."""

    always_adds = True


class BlindClaim(DedupPolicy):
    """dedup, claiming it needs no neighbours: the store then gives it none."""

    needs_neighbours = False


class Marks:
    """Adds, and marks the proposal's meta as seen (the store's own item)."""

    name = "marks"

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        proposal.meta["seen"] = now
        return WriteDecision(WriteOp.ADD)


class CoinFlip:
    """ADD or NOOP at random: a replay or another host decides otherwise."""

    name = "coin-flip"

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        return WriteDecision(random.choice([WriteOp.ADD, WriteOp.NOOP]))


class UpdatesNothing:
    """UPDATEs an id no namespace holds."""

    name = "updates-nothing"

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        return WriteDecision(WriteOp.UPDATE, 10**9)


class Raises:
    """Fails on a revision."""

    name = "raises"

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        if neighbours:
            raise ValueError("no room for doubt")
        return WriteDecision(WriteOp.ADD)


ONE_AT_A_TIME = "one at a time with their neighbours"
REFUSED = "the store refused it: write policy"
BROKEN = [
    (ClaimsToAlwaysAdd, rf"{ONE_AT_A_TIME} \(the policy claims always_adds = True"),
    (BlindClaim, rf"{ONE_AT_A_TIME} \(the policy claims needs_neighbours = False\)"),
    (Marks, "decide changed the proposal or its neighbours at time 0.0"),
    # the same call answered otherwise, or (the same twice by chance) a batch decided otherwise
    (CoinFlip, rf"decide answered WriteDecision\(.*\), then|{ONE_AT_A_TIME}$"),
    (UpdatesNothing, f"write 0: {REFUSED} .* UPDATE's target must be an item of private/alice"),
    (Raises, f"{REFUSED} .* raised ValueError: no room for doubt"),
]


@pytest.mark.parametrize(("policy", "said"), BROKEN)
def test_a_policy_breaking_the_contract_fails_it_saying_how(policy: type, said: str) -> None:
    random.seed(3)
    with pytest.raises(ContractFailure, match=said):
        check_write_policy(policy)
