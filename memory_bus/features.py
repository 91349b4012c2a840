"""The one feature function that eviction policies see.

Heuristic policies read columns of it, learned policies score its rows, and RL training
(in ``hivemem.platform.rl``) calls the same function, so a policy serves on the bus
exactly what it learned on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hivemem.memory_bus.item import Item

FEATURE_NAMES: tuple[str, ...] = (
    "age",  # now - created
    "since_access",  # now - accessed
    "log_hits",  # log1p(hits)
    "importance",  # caller's hint
    "retention",  # MemoryBank: exp(-since_access / (strength * (1 + hits)))
    "relevance",  # cosine to the context vector (the incoming item), 0 without one
    "log_tokens",  # log1p(whitespace tokens of text)
    "version",  # 1 + number of updates
    "expired",  # 1.0 if valid_to <= now
)
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
NUM_FEATURES = len(FEATURE_NAMES)

DEFAULT_STRENGTH = 10.0
"""MemoryBank's memory strength per recall, in simulation-time units."""


def retention(since_access: np.ndarray, hits: np.ndarray, strength: float) -> np.ndarray:
    """MemoryBank/Ebbinghaus retention ``R = exp(-t / S)``.

    ``t`` is the time since the last recall and the strength ``S = strength * (1 + hits)``
    grows with every recall, so a memory recalled often fades more slowly. (MemoryBank's
    published code divides the other way round, making often-recalled memories fade
    *faster*; this is the direction of its paper.)
    """
    s = strength * (1.0 + hits)
    return np.exp(-np.maximum(since_access, 0.0) / s)


def candidate_features(
    items: Sequence[Item],
    now: float,
    context: np.ndarray | None = None,
    strength: float = DEFAULT_STRENGTH,
) -> np.ndarray:
    """Feature matrix of eviction candidates, one row per item, columns ``FEATURE_NAMES``.

    Args:
        items: The candidates.
        now: Simulation time of the decision.
        context: A unit vector the decision is about (the incoming item), or None.
        strength: MemoryBank strength per recall.

    Returns:
        float64 array of shape (len(items), NUM_FEATURES).
    """
    n = len(items)
    out = np.zeros((n, NUM_FEATURES), dtype=np.float64)
    if n == 0:
        return out
    created = np.fromiter((it.created for it in items), np.float64, n)
    accessed = np.fromiter((it.accessed for it in items), np.float64, n)
    hits = np.fromiter((it.hits for it in items), np.float64, n)
    out[:, COLUMN["age"]] = now - created
    out[:, COLUMN["since_access"]] = now - accessed
    out[:, COLUMN["log_hits"]] = np.log1p(hits)
    out[:, COLUMN["importance"]] = np.fromiter((it.importance for it in items), np.float64, n)
    out[:, COLUMN["retention"]] = retention(now - accessed, hits, strength)
    if context is not None:
        vectors = np.stack([it.vector for it in items])
        out[:, COLUMN["relevance"]] = vectors @ context.astype(np.float32)
    out[:, COLUMN["log_tokens"]] = np.log1p(np.fromiter((it.tokens for it in items), np.float64, n))
    out[:, COLUMN["version"]] = np.fromiter((it.version for it in items), np.float64, n)
    out[:, COLUMN["expired"]] = np.fromiter((it.valid_to <= now for it in items), np.float64, n)
    return out
