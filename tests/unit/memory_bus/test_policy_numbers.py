"""Eviction policies' numbers: MemoryBank's strength exact in whole recalls, and policy
parameters refused unless finite numbers (findings of an audit of the eviction policies)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.policies import (
    GenerativeAgentsPolicy,
    MemoryBankPolicy,
    make_eviction_policy,
)
from hivemem.memory_bus.store import MemoryStore

A = Caller("a", frozenset())
V = np.array([1, 0, 0, 0], np.float32)


def store(eviction: str, **params: Any) -> MemoryStore:
    tier = TierConfig(capacity=2, eviction=eviction, eviction_params=params)
    return MemoryStore(StoreConfig(dim=4, private=tier))


def test_memorybank_equal_retentions_fall_to_the_least_recently_recalled() -> None:
    """X (recalled twice, last at 50) and Y (written at 150) both have retention exp(-5)
    at 200 (t / S = 150 / 30 = 50 / 10). S was strength * exp(log1p(2)) = 30.000000000000004:
    X came out ahead by rounding and Y, the more recent, was evicted."""
    tier = store("memorybank", strength=10.0).private
    x = tier.write(A, "a", NewItem("X", vector=V), now=0.0).item_id
    tier.get(A, "a", x, now=40.0)
    tier.get(A, "a", x, now=50.0)
    tier.write(A, "a", NewItem("Y", vector=V), now=150.0)
    assert tier.write(A, "a", NewItem("Z", vector=V), now=200.0).evicted == [x]


@pytest.mark.parametrize(
    ("eviction", "name", "value"),
    [
        ("memorybank", "strength", float("inf")),  # MemoryBank became LRU
        ("memorybank", "strength", True),
        ("memorybank", "strength", "10"),
        ("memorybank", "strength", None),
        ("memorybank", "strength", 0.0),
        ("memorybank", "strength", float("nan")),
        ("generative_agents", "importance_scale", float("inf")),
        ("generative_agents", "importance_scale", -1.0),
        ("generative_agents", "decay", True),
        ("generative_agents", "decay", "0.9"),
        ("generative_agents", "decay", 0.0),
        ("generative_agents", "w_recency", "1"),
        ("generative_agents", "w_importance", False),
        ("generative_agents", "w_relevance", float("-inf")),
    ],
)
def test_a_policy_parameter_that_is_no_usable_number_is_refused(
    eviction: str, name: str, value: Any
) -> None:
    with pytest.raises(
        ConfigError, match=f"eviction policy '{eviction}': {name} must be a finite number"
    ):
        store(eviction, **{name: value})


def test_good_parameters_are_taken() -> None:
    bank = make_eviction_policy("memorybank", strength=3)
    assert isinstance(bank, MemoryBankPolicy) and bank.strength == 3.0
    ga = make_eviction_policy("generative_agents", decay=1, importance_scale=np.float32(5.0))
    assert isinstance(ga, GenerativeAgentsPolicy) and ga.importance_scale == 5.0
