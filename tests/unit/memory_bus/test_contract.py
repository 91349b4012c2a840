"""The tier contract over every tier, mode and eviction policy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hivemem.memory_bus.config import NamespaceMode, StoreConfig, TierConfig
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing import (
    TIER_CHECKS,
    ContractFailure,
    Harness,
    check_state_round_trip,
    run_tier_contract,
    simulate_trace,
)

TIERS = ("private", "shared", "graph")
POLICIES = ("fifo", "lru", "lfu", "random", "memorybank", "generative_agents")
MODES: dict[str, TierConfig] = {
    **{f"standard-{p}": TierConfig(capacity=5, eviction=p) for p in POLICIES},
    "window": TierConfig(capacity=4, mode=NamespaceMode.WINDOW),
    "token_budget": TierConfig(mode=NamespaceMode.TOKEN_BUDGET, token_budget=12, eviction="lfu"),
    "vector": TierConfig(capacity=5, mode=NamespaceMode.VECTOR, eviction="lru"),
    "dedup": TierConfig(capacity=6, write_policy="dedup"),
}


def factory(tier: str, tier_config: TierConfig, dim: int = 32) -> Callable[[], MemoryStore]:
    def make() -> MemoryStore:
        fields = tier_config.model_dump()
        if tier == "graph":
            from hivemem.memory_bus.config import GraphConfig

            return MemoryStore(StoreConfig(dim=dim, graph=GraphConfig(**fields)))
        return MemoryStore(StoreConfig(dim=dim, **{tier: tier_config}))

    return make


@pytest.mark.parametrize("check", TIER_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("tier", TIERS)
def test_tier_contract(tier: str, mode: str, check: Callable[[Harness], None]) -> None:
    check(Harness.build(factory(tier, MODES[mode]), tier))


@pytest.mark.parametrize("tier", TIERS)
def test_state_survives_a_fresh_process(tier: str) -> None:
    check_state_round_trip(
        Harness.build(factory(tier, MODES["standard-lru"]), tier), fresh_process=True
    )


def _zipf_trace(seed: int, length: int, keys: int) -> list[str]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1) ** 1.1
    draws = rng.choice(keys, size=length, p=weights / weights.sum())
    return [f"k{d}" for d in draws]


@pytest.mark.parametrize("seed", range(6))
def test_belady_never_worse_than_any_policy(seed: int) -> None:
    trace = _zipf_trace(seed, length=240, keys=40)
    cap = 6
    scores = {
        p: simulate_trace(factory("shared", TierConfig(capacity=cap, eviction=p)), trace)
        for p in POLICIES
    }
    best = simulate_trace(
        factory("shared", TierConfig(capacity=cap, eviction="belady")), trace, oracle=True
    )
    assert all(best >= s for s in scores.values()), (best, scores)
    assert best > min(scores.values()), (
        "the oracle should beat the weakest heuristic on a skewed trace"
    )


def test_the_contract_says_so_when_the_write_policy_adds_nothing() -> None:
    """A tier whose policy does not add (``never``) failed its first read back with
    ``ItemNotFoundError: no item -1``, a store error that blamed the tier; the contract
    now names the policy and where its decisions are checked."""
    config = TierConfig(capacity=6, write_policy="never")
    with pytest.raises(ContractFailure) as err:
        run_tier_contract(factory("shared", config), "shared")
    assert str(err.value) == (
        "the tier contract reads back what it writes, so it needs a write policy that adds "
        "a first proposal to an empty namespace; the shared tier's 'never' answered NOOP "
        "(check a write policy with check_write_policy)"
    )
