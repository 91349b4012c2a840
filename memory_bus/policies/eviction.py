"""Eviction policies: which items leave a namespace that is over capacity.

Every policy reads the candidates' feature matrix (``hivemem.memory_bus.features``), the
same matrix a learned policy scores, and breaks ties by the lower (older) id, so every
decision is deterministic given the seed. The classic ones are baselines and stay pure:
none of them special-cases expired items.

Times are in units of the callers' ``now`` (a tick in ``hivemem run``), whatever the
papers' units (Generative Agents' decay per game hour, MemoryBank's strength in days).
An ``update`` sets ``accessed`` as a recall does (without counting a recall), so it
counts as an access for ``lru``, MemoryBank's ``t`` and Generative Agents' recency
(``docs/scenarios.md``, "What counts as an access").

=====================  ==============================================================
name                   evicts first
=====================  ==============================================================
``fifo``               the oldest write (the lowest ``created``: the writer's ``now``)
``lru``                the least recently accessed (recalled, or updated)
``lfu``                the fewest recalls (then least recently accessed)
``random``             uniformly at random (the namespace's seeded generator)
``memorybank``         the lowest Ebbinghaus retention ``exp(-t / S)``, S growing with recalls
``generative_agents``  the lowest recency + importance + relevance score (Park et al. 2023)
``belady``             the item needed furthest in the future (the oracle; simulation only)
=====================  ==============================================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hivemem.memory_bus.candidates import lowest_first
from hivemem.memory_bus.errors import ConfigError, InvalidInputError, UnknownNameError
from hivemem.memory_bus.features import COLUMN, DEFAULT_STRENGTH, FEATURE_NAMES
from hivemem.memory_bus.interfaces import EvictionContext, EvictionPolicy
from hivemem.memory_bus.item import Item
from hivemem.memory_bus.registry import Registry

EVICTION_POLICIES: Registry[EvictionPolicy] = Registry("eviction policy")


def _check_n(candidates: Sequence[Item], n: int) -> None:
    if not 0 <= n <= len(candidates):
        raise InvalidInputError("n", f"cannot evict {n} of {len(candidates)} candidates")


def _number(
    policy: str,
    name: str,
    value: Any,
    bound: str = "",
    within: Callable[[float], bool] | None = None,
) -> float:
    """``value``, a policy's parameter ``name``, as a float, if it is a finite number
    ``within`` its ``bound`` (a phrase for the error).

    Raises:
        ConfigError: naming the policy and the parameter. A bool or a numeric string is
            no number here (``True`` was taken as a strength of 1, ``"1"`` as a weight),
            nor is infinity (a strength of inf made MemoryBank evict as LRU does, an
            ``importance_scale`` of inf made every importance 0).
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and math.isfinite(value) and (within is None or within(float(value))):
        return float(value)
    rule = " ".join(filter(None, ["a finite number", bound]))
    raise ConfigError(
        f"bad parameters for eviction policy {policy!r}: {name} must be {rule}, got {value!r}"
    )


class _KeyPolicy:
    """A policy that evicts the lowest keys computed from the features."""

    name = "key"

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        raise NotImplementedError

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        """Positions of ``n`` victims."""
        _check_n(candidates, n)
        return lowest_first(self.keys(features, ctx), candidates, n, ctx.ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@EVICTION_POLICIES.register("fifo")
class FIFOPolicy(_KeyPolicy):
    """First in, first out: the oldest write goes."""

    name = "fifo"
    uses_relevance = False  # the store skips computing that column for it
    row_keys = True  # a row's keys are its own: the store sorts the candidates once a write
    feature_columns = frozenset({"age"})  # all the store need compute for it

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        return [-features[:, COLUMN["age"]]]


@EVICTION_POLICIES.register("lru")
class LRUPolicy(_KeyPolicy):
    """Least recently used: the item recalled longest ago goes."""

    name = "lru"
    uses_relevance = False  # the store skips computing that column for it
    row_keys = True  # a row's keys are its own: the store sorts the candidates once a write
    feature_columns = frozenset({"since_access"})  # all the store need compute for it

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        return [-features[:, COLUMN["since_access"]]]


@EVICTION_POLICIES.register("lfu")
class LFUPolicy(_KeyPolicy):
    """Least frequently used, ties to the least recently used."""

    name = "lfu"
    uses_relevance = False  # the store skips computing that column for it
    row_keys = True  # a row's keys are its own: the store sorts the candidates once a write
    feature_columns = frozenset({"log_hits", "since_access"})  # all the store need compute for it

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        return [features[:, COLUMN["log_hits"]], -features[:, COLUMN["since_access"]]]


@EVICTION_POLICIES.register("memorybank")
class MemoryBankPolicy(_KeyPolicy):
    """MemoryBank (Zhong et al. 2023): the memory with the lowest retention goes.

    Args:
        strength: Strength gained per recall, in simulation time (the store computes the
            retention feature with it).
    """

    name = "memorybank"
    uses_relevance = False  # the store skips computing that column for it
    row_keys = True  # a row's keys are its own: the store sorts the candidates once a write
    feature_columns = frozenset({"since_access", "log_hits"})  # all the store need compute for it

    def __init__(self, strength: float = DEFAULT_STRENGTH) -> None:
        self.strength = _number("memorybank", "strength", strength, "> 0", lambda s: s > 0)

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        """Lowest retention first, by its exponent ``-t / S`` (``S = strength * (1 +
        hits)``): ``exp`` of it is 0.0 for every memory unrecalled for some hundreds of
        strengths, and the ranking fell to the tie-break (LRU). Then the least recent."""
        since = features[:, COLUMN["since_access"]]
        # The whole recalls back from log1p(hits): exp(log1p(2)) is 3.0000000000000004,
        # and two retentions equal in whole numbers were told apart by that rounding.
        hits = np.rint(np.expm1(features[:, COLUMN["log_hits"]]))
        log_retention = -np.maximum(since, 0.0) / (self.strength * (1.0 + hits))
        return [log_retention, -since]


@EVICTION_POLICIES.register("generative_agents")
class GenerativeAgentsPolicy(_KeyPolicy):
    """Generative Agents (Park et al. 2023) retrieval score; the lowest score goes.

    ``score = w_r * recency + w_i * importance + w_v * relevance``, each component
    min-max normalised over the candidates, with ``recency = decay ** since_access`` and
    ``importance / importance_scale``.
    """

    name = "generative_agents"
    feature_columns = frozenset({"since_access", "importance"})  # and relevance

    def __init__(
        self,
        decay: float = 0.995,
        importance_scale: float = 10.0,
        w_recency: float = 1.0,
        w_importance: float = 1.0,
        w_relevance: float = 1.0,
    ) -> None:
        name = "generative_agents"
        self.decay = _number(name, "decay", decay, "in (0, 1]", lambda d: 0 < d <= 1)
        self.importance_scale = _number(
            name, "importance_scale", importance_scale, "> 0", lambda s: s > 0
        )
        weights = {"w_recency": w_recency, "w_importance": w_importance, "w_relevance": w_relevance}  # fmt: skip
        # (NaN scored every item NaN)
        self.weights = tuple(_number(name, key, w) for key, w in weights.items())

    def score(self, features: np.ndarray) -> np.ndarray:
        """The retrieval score of each candidate (higher = keep)."""
        since = features[:, COLUMN["since_access"]]
        # decay ** since, over the freshest candidate's: the same after min-max scaling,
        # and no underflow to 0 for all (which made recency weigh nothing, late in a run)
        recency = np.power(self.decay, since - since.min()) if len(since) else since
        importance = features[:, COLUMN["importance"]] / self.importance_scale
        relevance = features[:, COLUMN["relevance"]]
        parts = [_minmax(recency), _minmax(importance), _minmax(relevance)]
        return sum(
            (w * p for w, p in zip(self.weights, parts, strict=True)), np.zeros(len(features))
        )

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        return [self.score(features)]


def _minmax(values: np.ndarray) -> np.ndarray:
    if not len(values):
        return np.zeros_like(values)
    low = values.min()  # once: called per eviction, over every candidate
    span = float(values.max() - low)
    return (values - low) / span if span > 0 else np.zeros_like(values)


@EVICTION_POLICIES.register("random")
class RandomPolicy:
    """Uniformly random victims from the namespace's seeded generator."""

    name = "random"
    feature_columns: frozenset[str] = frozenset()  # reads no feature
    uses_relevance = False  # the store skips computing that column for it

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        """Positions of ``n`` victims."""
        _check_n(candidates, n)
        # Drawn among the candidates in write order (their ids'), not in the pool's order,
        # which depends on how the writes were batched (one host's batch or three).
        ids = np.fromiter((c.id for c in candidates), np.int64, len(candidates))
        in_write_order = np.argsort(ids, kind="stable")
        return in_write_order[ctx.rng.choice(len(candidates), size=n, replace=False)].tolist()


@EVICTION_POLICIES.register("belady")
class BeladyPolicy(_KeyPolicy):
    """Belady's MIN: evict what is needed furthest in the future (never needed: first).

    It needs the future, which only a simulation knows: ``ctx.next_use``.
    """

    name = "belady"
    needs_future = True  # a tier refuses writes without it (VectorTier.write_batch)
    feature_columns: frozenset[str] = frozenset()  # reads no feature
    uses_relevance = False  # the store skips computing that column for it

    def keys(self, features: np.ndarray, ctx: EvictionContext) -> list[np.ndarray]:
        raise NotImplementedError  # select() below needs the items, not just features

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        """Positions of ``n`` victims."""
        _check_n(candidates, n)
        if ctx.next_use is None:
            raise ConfigError(
                "belady needs the future access sequence; only a simulation can provide it"
            )
        next_use = np.fromiter(
            (ctx.next_use(it, ctx.now) for it in candidates), np.float64, len(candidates)
        )
        finite = np.where(np.isinf(next_use), -math.inf, -next_use)
        return lowest_first([finite], candidates, n, ctx.ids)


EVICTION_POLICIES.register("oracle")(BeladyPolicy)


def make_eviction_policy(name: str, **params: Any) -> EvictionPolicy:
    """An eviction policy by name (``lru``, ...) or ``"module:Class"``, with its parameters.

    Raises:
        ConfigError: no ``select`` method (the first eviction failed), or ``row_keys``
            without a ``keys`` method to sort by.
        UnknownNameError: An unknown name, or a feature in the policy's
            ``feature_columns`` that ``FEATURE_NAMES`` does not have (the store would
            leave that column 0 and the policy would evict by a column of zeros).
    """
    policy = EVICTION_POLICIES.create(name, **params)
    if not callable(getattr(policy, "select", None)):
        raise ConfigError(f"eviction policy {name!r} has no select(candidates, features, n, ctx)")
    if getattr(policy, "row_keys", False) and not callable(getattr(policy, "keys", None)):
        raise ConfigError(f"eviction policy {name!r} has row_keys but no keys(features, ctx)")
    for column in getattr(policy, "feature_columns", None) or ():
        if column not in COLUMN:
            raise UnknownNameError("eviction feature", str(column), FEATURE_NAMES)
    return policy
