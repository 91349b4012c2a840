"""Eviction and write policies, built in and by name."""

from hivemem.memory_bus.policies.eviction import (
    EVICTION_POLICIES,
    BeladyPolicy,
    FIFOPolicy,
    GenerativeAgentsPolicy,
    LFUPolicy,
    LRUPolicy,
    MemoryBankPolicy,
    RandomPolicy,
    make_eviction_policy,
)
from hivemem.memory_bus.policies.learned import (
    LearnedEvictionPolicy,
    LearnedWritePolicy,
    Scorer,
)
from hivemem.memory_bus.policies.write import (
    WRITE_POLICIES,
    AlwaysAddPolicy,
    DedupPolicy,
    NeverWritePolicy,
    make_write_policy,
)

__all__ = [
    "EVICTION_POLICIES",
    "WRITE_POLICIES",
    "AlwaysAddPolicy",
    "BeladyPolicy",
    "DedupPolicy",
    "FIFOPolicy",
    "GenerativeAgentsPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "LearnedEvictionPolicy",
    "LearnedWritePolicy",
    "MemoryBankPolicy",
    "NeverWritePolicy",
    "RandomPolicy",
    "Scorer",
    "make_eviction_policy",
    "make_write_policy",
]
