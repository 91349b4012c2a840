"""numpy generators' state in snapshots: each namespace draws from its own seeded one, and
a restart must go on drawing where it stopped (:mod:`hivemem.memory_bus.namespace`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """``rng``'s state, msgpack-safe (for snapshots)."""
    # PCG64's state holds 128-bit ints, beyond msgpack's range: carry them as strings.
    state = rng.bit_generator.state
    inner = {key: str(value) for key, value in state["state"].items()}
    return {
        "bit_generator": state["bit_generator"],
        "state": inner,
        "has_uint32": state["has_uint32"],
        "uinteger": state["uinteger"],
    }


def generator_from_state(saved: dict[str, Any]) -> dict[str, Any]:
    """The state :func:`generator_state` saved, for ``rng.bit_generator.state``."""
    inner = {key: int(value) for key, value in saved["state"].items()}
    return {**saved, "state": inner}
