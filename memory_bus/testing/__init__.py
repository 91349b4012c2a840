"""Contract suites that users run over their own tiers and policies.

Example:
    >>> from hivemem.memory_bus.testing import run_tier_contract  # doctest: +SKIP
    >>> run_tier_contract(lambda: MemoryStore(my_config), "shared")  # doctest: +SKIP
"""

from hivemem.memory_bus.testing.contract import (
    TIER_CHECKS,
    Harness,
    check_access,
    check_bad_input,
    check_capacity,
    check_round_trip,
    check_state_round_trip,
    check_versions,
    run_tier_contract,
    simulate_trace,
)
from hivemem.memory_bus.testing.evictions import check_eviction_policy
from hivemem.memory_bus.testing.failures import ContractFailure
from hivemem.memory_bus.testing.replay import check_replay, logical_state
from hivemem.memory_bus.testing.transports import check_transport
from hivemem.memory_bus.testing.write_policies import check_write_policy

__all__ = [
    "TIER_CHECKS",
    "ContractFailure",
    "Harness",
    "check_access",
    "check_bad_input",
    "check_capacity",
    "check_eviction_policy",
    "check_replay",
    "check_round_trip",
    "check_state_round_trip",
    "check_transport",
    "check_versions",
    "check_write_policy",
    "logical_state",
    "run_tier_contract",
    "simulate_trace",
]
