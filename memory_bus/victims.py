"""Which items a namespace evicts to get back within its bounds: its victims.

:class:`~hivemem.memory_bus.namespace.Namespace` keeps its items and bounds, and once a
victim is chosen it drops it (its event, its index row, its history); what is here
chooses the victims. A write that brings the namespace one row, or a new version that
takes it over its token budget, evicts with :func:`evict_alone`: a feature matrix of
the other items is built for each victim. A longer write builds a
:func:`candidate_pool` at its first eviction and makes room for each of its rows with
:func:`make_room` (see :mod:`hivemem.memory_bus.candidates`). A window evicts its oldest
write first; any other mode asks its eviction policy, given the features the policy
reads. Either way the candidates are the items the write under way may evict
(``Namespace.eviction_scope``), never the incoming item itself.

It is apart from the namespace because choosing victims is one sub-algorithm, the
namespace's only use of its eviction policy, its features and its candidate pools. The
functions take the namespace and work on it as its methods did: they read its built
items (``Namespace._items``; every caller builds the pending ones first), ask whether it
is over its bounds (``Namespace._over``) and take each victim out of its items and counts
(``Namespace._take_out``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

import numpy as np
from hivemem.memory_bus.candidates import CandidatePool, RowKeys, lowest_first
from hivemem.memory_bus.config import NamespaceMode
from hivemem.memory_bus.errors import ConfigError
from hivemem.memory_bus.features import COLUMN, candidate_features
from hivemem.memory_bus.interfaces import EvictionContext
from hivemem.memory_bus.item import Item
from hivemem.memory_bus.registry import plugin_failed

if TYPE_CHECKING:
    from hivemem.memory_bus.namespace import Namespace, NextUse


def _oldest_write_first(features: np.ndarray) -> list[np.ndarray]:
    """A window's eviction keys: the oldest write first."""
    return [-features[:, COLUMN["age"]]]


WINDOW_COLUMNS = frozenset({"age"})
"""The features a window's eviction reads."""


def candidate_pool(ns: Namespace, incoming: Item, now: float) -> CandidatePool:
    """Every item but ``incoming`` as eviction candidates (see :mod:`.candidates`)."""
    strength, relevance, columns = _feature_args(ns)
    pool = CandidatePool(_others(ns, incoming), now, strength, relevance, columns)
    keys = _row_keys(ns, now)
    if keys is not None:
        pool.order_by(keys)
    return pool


def _feature_args(ns: Namespace) -> tuple[float, bool, frozenset[str] | None]:
    """The eviction features' strength, whether they read relevance, and the columns
    they need (None: every one)."""
    strength = float(getattr(ns.eviction, "strength", 10.0))
    if ns.config.mode is NamespaceMode.WINDOW:
        return strength, False, WINDOW_COLUMNS
    relevance = bool(getattr(ns.eviction, "uses_relevance", True))
    columns = getattr(ns.eviction, "feature_columns", None)
    return strength, relevance, None if columns is None else frozenset(columns)


def _others(ns: Namespace, incoming: Item) -> list[Item]:
    """Every item but ``incoming`` that the write under way may evict."""
    scope = ns.eviction_scope()
    if scope is not None:
        return [it for it in ns._items.values() if it.id != incoming.id and scope(it)]
    others = list(ns._items.values())
    if others and others[-1] is incoming:  # add_many put it last: drop it in C
        others.pop()
        return others
    return [it for it in others if it.id != incoming.id]


def evict_alone(ns: Namespace, incoming: Item, now: float, next_use: NextUse | None) -> list[int]:
    """Evict until the namespace fits, each victim chosen from a feature matrix of the
    other items built for it (the definition, which a pool follows over many
    evictions); for a write that brings the namespace one row."""
    strength, relevance, columns = _feature_args(ns)
    context = incoming.vector if relevance else None
    victims: list[int] = []
    while ns._over(0):
        others = _others(ns, incoming)
        if not others:
            break
        features = candidate_features(others, now, context, strength, columns)
        # the ids a policy is promised in ctx.ids (a pool has them; here they are made)
        ids = np.fromiter((it.id for it in others), np.int64, len(others))
        if ns.config.mode is NamespaceMode.WINDOW:
            chosen = lowest_first(_oldest_write_first(features), others, 1, ids)
        else:
            chosen = _select(ns, features, ids, incoming, now, next_use, others)
        for pos in chosen:
            victims.append(others[pos].id)
            ns._take_out(others[pos])
    return victims


def _row_keys(ns: Namespace, now: float) -> RowKeys | None:
    """The eviction keys of feature rows if each row's are its own, else None (the
    context names no incoming item: keys that are a row's own cannot read it)."""
    if ns.config.mode is NamespaceMode.WINDOW:
        return _oldest_write_first
    policy: Any = ns.eviction
    if not getattr(policy, "row_keys", False):
        return None
    ctx = EvictionContext(now=now, rng=ns.rng)

    def keys(features: np.ndarray) -> Sequence[np.ndarray]:
        try:
            answer = policy.keys(features, ctx)
        except Exception as exc:
            _policy_failed(ns, exc)
        return _checked_keys(ns, answer, len(features))

    return keys


def _checked_keys(ns: Namespace, answer: Any, n: int) -> Sequence[np.ndarray]:
    """``answer``, a policy's ``keys`` of ``n`` feature rows, if it is a list (or tuple)
    of arrays of ``n`` values each; else a :class:`ConfigError` naming the policy. A bare
    array failed in numpy's sort as a ``ValueError`` naming nobody (``internal`` on the
    bus), and keys of another length would order the rows wrongly."""
    if (
        type(answer) in (list, tuple)
        and answer
        and all(isinstance(c, np.ndarray) and c.shape == (n,) for c in answer)
    ):
        return cast(Sequence[np.ndarray], answer)
    if isinstance(answer, np.ndarray):
        shown = f"bare array of shape {answer.shape}"
    elif type(answer) in (list, tuple):
        shown = f"{type(answer).__name__} of shapes {[np.shape(c) for c in answer][:4]}"
    else:
        shown = type(answer).__name__
    raise ConfigError(
        f"eviction policy {ns.config.eviction!r} answered a {shown} to keys() of {n} "
        f"rows: it must return a list of arrays of {n} values, the first key most significant",
        policy=ns.config.eviction,
    )


def make_room(
    ns: Namespace,
    incoming: Item,
    now: float,
    next_use: NextUse | None,
    pool: CandidatePool,
    column: int,
) -> list[int]:
    """Evict until the namespace fits; then ``incoming`` (the ``column``-th vector the
    pool expects) joins the candidates."""
    victims: list[int] = []
    while ns._over(0) and len(pool):
        if pool.ordered:
            chosen = [ns._items[pool.lowest()]]
        else:
            candidates, features, ids = pool.view(incoming.vector, column)
            chosen = [
                candidates[pos]
                for pos in _select(ns, features, ids, incoming, now, next_use, candidates)
            ]
        for victim in chosen:
            victims.append(victim.id)
            ns._take_out(victim)
            pool.remove(victim.id)
    scope = ns.eviction_scope()
    if scope is None or scope(incoming):  # never a victim of its own arrival
        pool.add(incoming)  # (nor, out of the write's scope, of the rows after it)
    return victims


def _select(
    ns: Namespace,
    features: np.ndarray,
    ids: np.ndarray | None,
    incoming: Item,
    now: float,
    next_use: NextUse | None,
    candidates: list[Item],
) -> list[int]:
    # (a window's pool is always ordered: _row_keys, so it never comes here)
    ctx = EvictionContext(now=now, rng=ns.rng, next_use=next_use, incoming=incoming, ids=ids)
    try:
        chosen = ns.eviction.select(candidates, features, 1, ctx)
    except Exception as exc:
        _policy_failed(ns, exc)
    return _checked(ns, chosen, len(candidates), 1)


def _policy_failed(ns: Namespace, exc: Exception) -> NoReturn:
    name = ns.config.eviction
    plugin_failed(f"eviction policy {name!r}", exc, policy=name)


def selected_positions(chosen: Any, count: int, n: int) -> list[int] | None:
    """``chosen``, an eviction policy's answer to ``select(..., n, ...)`` among ``count``
    candidates, as ``n`` distinct positions in range; None if it is not that."""
    try:
        positions = [operator.index(p) for p in chosen]
    except TypeError:
        return None
    if len(positions) != n or len(set(positions)) != n:
        return None
    return positions if all(0 <= p < count for p in positions) else None


def _checked(ns: Namespace, chosen: Any, count: int, n: int) -> list[int]:
    """The ``n`` distinct positions among ``count`` candidates a policy's ``select``
    answered, or a :class:`ConfigError` naming the policy: a plug-in's position out of
    range failed the write with an ``IndexError`` (an ``internal`` error on the bus),
    the incoming item stored over the namespace's capacity all the same.

    The write has changed the namespace by then (its row is in, announced), so the bus
    keeps the request's journal record and a restart replays the same refusal.
    """
    positions = selected_positions(chosen, count, n)
    if positions is None:
        raise ConfigError(
            f"eviction policy {ns.config.eviction!r} answered {chosen!r} to select(n={n}) "
            f"among {count} candidates: it must return {n} distinct positions in 0..{count - 1}",
            policy=ns.config.eviction,
        )
    return positions
