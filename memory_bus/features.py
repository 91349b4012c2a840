"""The one feature function that eviction policies see.

Heuristic policies read columns of it, learned policies score its rows, and RL training
(in ``hivemem.platform.rl``) calls the same function, so a policy serves on the bus
exactly what it learned on.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from operator import attrgetter

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
    columns: Collection[str] | None = None,
) -> np.ndarray:
    """Feature matrix of eviction candidates, one row per item, columns ``FEATURE_NAMES``.

    Args:
        items: The candidates.
        now: Simulation time of the decision.
        context: A unit vector the decision is about (the incoming item), or None.
        strength: MemoryBank strength per recall.
        columns: Only these features are computed (each is a pass over the items in
            Python), the others left 0; None computes every one.

    Returns:
        float64 array of shape (len(items), NUM_FEATURES).
    """
    n = len(items)
    out = np.zeros((n, NUM_FEATURES), dtype=np.float64)
    if n == 0:
        return out
    wanted = set(FEATURE_NAMES if columns is None else columns)

    def read(attribute: str) -> np.ndarray:
        return np.fromiter(map(attrgetter(attribute), items), np.float64, n)

    if {"since_access", "retention"} & wanted:
        accessed = read("accessed")
        out[:, COLUMN["since_access"]] = now - accessed
    if {"log_hits", "retention"} & wanted:
        hits = read("hits")
        out[:, COLUMN["log_hits"]] = np.log1p(hits)
    if "retention" in wanted:
        out[:, COLUMN["retention"]] = retention(now - accessed, hits, strength)
    if "age" in wanted:
        out[:, COLUMN["age"]] = now - read("created")
    if "importance" in wanted:
        out[:, COLUMN["importance"]] = read("importance")
    if context is not None:
        vectors = np.stack([it.vector for it in items])
        out[:, COLUMN["relevance"]] = vectors @ context.astype(np.float32)
    if "log_tokens" in wanted:
        out[:, COLUMN["log_tokens"]] = np.log1p(read("tokens"))
    if "version" in wanted:
        out[:, COLUMN["version"]] = read("version")
    if "expired" in wanted:
        out[:, COLUMN["expired"]] = np.fromiter((it.valid_to <= now for it in items), np.float64, n)
    return out


EVICTION_INPUT_NAMES: tuple[str, ...] = (
    *(f"z_{name}" for name in FEATURE_NAMES),
    "importance",
    "retention",
    "relevance",
    "expired",
)
"""What a learned eviction scorer reads: each feature standardised over the candidates
(scale-free, so a policy trained on one horizon serves on another), plus the features
that already live on a fixed scale."""

_RAW_COLUMNS = [COLUMN[name] for name in ("importance", "retention", "relevance", "expired")]


def eviction_inputs(features: np.ndarray) -> np.ndarray:
    """The learned scorer's input rows for a candidate feature matrix.

    Args:
        features: ``candidate_features(...)`` output, shape (n, NUM_FEATURES).

    Returns:
        float64 array of shape (n, len(EVICTION_INPUT_NAMES)); a constant column is 0.
    """
    mean = features.mean(axis=0) if len(features) else np.zeros(NUM_FEATURES)
    std = features.std(axis=0) if len(features) else np.ones(NUM_FEATURES)
    z = np.divide(features - mean, std, out=np.zeros_like(features), where=std > 1e-12)
    return np.concatenate([z, features[:, _RAW_COLUMNS]], axis=1)


WRITE_FEATURE_NAMES: tuple[str, ...] = (
    "bias",
    "has_neighbour",
    "best_score",  # cosine of the nearest neighbour
    "second_score",
    "same_text",  # the nearest neighbour has the proposal's exact text
    "same_key",  # some neighbour carries the proposal's meta key
    "best_is_same_key",
    "same_key_score",  # cosine of the most similar same-key neighbour
    "log_best_age",  # log1p(now - created) of the nearest neighbour
    "log_best_hits",
    "importance",
    "neighbour_share",  # neighbours found / NEIGHBOUR_SCALE (how filled the namespace is)
)
"""What a learned write policy sees of a proposal and its nearest neighbours."""

WRITE_COLUMN = {name: i for i, name in enumerate(WRITE_FEATURE_NAMES)}

NEIGHBOUR_SCALE = 5
"""The divisor of ``neighbour_share``: the default of a tier's ``neighbours`` setting.

A fixed scale, not the tier's own setting: a write policy is not told that setting (the
tier hands it the neighbours it found, not how many it asked for), and the environment
and the served policy must compute the same row. On a tier with ``neighbours: 10`` the
feature runs from 0 to 2. Every checkpoint so far was trained on tiers asking for 5,
where the two agree."""


def write_features(
    proposal: Item,
    neighbours: Sequence[tuple[float, Item]],
    now: float,
    key_field: str = "key",
    asked: int = NEIGHBOUR_SCALE,
) -> np.ndarray:
    """One row describing a proposed write against its neighbours (best first).

    Args:
        proposal: The proposed item.
        neighbours: ``(cosine, item)`` pairs, most similar first.
        now: Simulation time of the decision.
        key_field: The meta field naming the fact a memory is about.
        asked: The divisor of ``neighbour_share`` (see ``NEIGHBOUR_SCALE``).

    Returns:
        float64 array of shape (len(WRITE_FEATURE_NAMES),).
    """
    row = np.zeros(len(WRITE_FEATURE_NAMES))
    row[WRITE_COLUMN["bias"]] = 1.0
    row[WRITE_COLUMN["importance"]] = proposal.importance
    if not neighbours:
        return row
    best_score, best = neighbours[0]
    key = proposal.meta.get(key_field)
    same = [(s, it) for s, it in neighbours if key is not None and it.meta.get(key_field) == key]
    row[WRITE_COLUMN["has_neighbour"]] = 1.0
    row[WRITE_COLUMN["best_score"]] = best_score
    row[WRITE_COLUMN["second_score"]] = neighbours[1][0] if len(neighbours) > 1 else 0.0
    row[WRITE_COLUMN["same_text"]] = float(best.text == proposal.text)
    row[WRITE_COLUMN["same_key"]] = float(bool(same))
    row[WRITE_COLUMN["best_is_same_key"]] = float(bool(same) and same[0][1] is best)
    row[WRITE_COLUMN["same_key_score"]] = same[0][0] if same else 0.0
    row[WRITE_COLUMN["log_best_age"]] = np.log1p(max(now - best.created, 0.0))
    row[WRITE_COLUMN["log_best_hits"]] = np.log1p(best.hits)
    row[WRITE_COLUMN["neighbour_share"]] = len(neighbours) / max(asked, 1)
    return row
