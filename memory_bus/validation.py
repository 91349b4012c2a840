"""The checks a tier runs on a call's input before it changes anything: a write batch's
columns, the fields an update changes, and the scalar arguments (ids, ``k``, page bounds).

Kept apart from :mod:`hivemem.memory_bus.tiers`, which holds what a tier does once its
input is known good: each check here turns the input into its checked value or raises,
naming the field, and depends on the tier only through what it is passed (its access
check, its level check, its config and the store's context). The single-column checks
live in :mod:`hivemem.memory_bus.batch`; the graph tier and the query grouping of
:mod:`hivemem.memory_bus.queries` use the scalar checks as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from hivemem.memory_bus.batch import WriteBatch
from hivemem.memory_bus.columns import (
    batch_vectors,
    check_budget,
    check_metas,
    check_numbers,
    check_texts,
    check_times,
    check_validity,
    check_writers,
    column_of,
)
from hivemem.memory_bus.config import NamespaceMode, TierConfig
from hivemem.memory_bus.errors import InvalidInputError, UnknownNameError, WrongTypeError
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.item import (
    Item,
    check_meta,
    check_number,
    check_text,
    check_time,
    check_vector,
)

if TYPE_CHECKING:
    from hivemem.memory_bus.store_context import StoreContext

UPDATABLE = frozenset({"text", "vector", "meta", "importance", "valid_from", "valid_to"})


def checked_batch(
    batch: WriteBatch,
    now: float,
    ctx: StoreContext,
    config: TierConfig,
    check: Callable[[Caller, str, str, int | None], None],
    check_levels: Callable[[Any, int], list[int] | None],
) -> WriteBatch:
    """The batch with every column checked: access first (``check``, which on a shard of a
    bus also refuses a namespace another shard owns), then the values."""
    n, limits = len(batch), ctx.limits
    callers = column_of(batch.callers, n, "agent")
    namespaces = column_of(batch.namespaces, n, "namespace")
    levels = check_levels(batch.levels, n)
    check_writers(callers, namespaces, levels, check)
    texts = check_texts(batch.texts, n, limits)
    vectors = batch_vectors(batch.vectors, texts, ctx.dim, ctx.embedder, config.mode)
    if config.mode is NamespaceMode.VECTOR and any(texts):
        raise InvalidInputError("text", "this tier holds vector-only slots: text must be empty")
    valid_from = check_times(batch.valid_from, n, "valid_from", none_ok=True, open_ok=False)
    valid_to = check_times(batch.valid_to, n, "valid_to", none_ok=False)
    check_validity(valid_from, valid_to, now)
    checked = WriteBatch(
        callers,
        namespaces,
        texts,
        vectors,
        check_metas(batch.metas, n, limits),
        check_numbers(batch.importance, n, "importance"),
        valid_from,
        valid_to,
        levels,
    )
    check_budget(texts, config)
    return checked


def checked_changes(old: Item, changes: dict[str, Any], ctx: StoreContext) -> dict[str, Any]:
    """The fields of ``old`` that ``changes`` sets, checked (a new text without a vector
    is embedded, where the store has an embedder).

    Raises:
        InvalidInputError: a field that cannot be updated, a bad value, or a validity
            that ends before it starts.
    """
    unknown = sorted(set(changes) - UPDATABLE)
    if unknown:
        hint = UnknownNameError("field to update", unknown[0], UPDATABLE)
        raise InvalidInputError(
            "changes", hint.message, name=unknown[0], suggestions=hint.suggestions
        )
    out: dict[str, Any] = {}
    if "text" in changes:
        out["text"] = check_text(changes["text"], ctx.limits)
        if "vector" not in changes and ctx.embedder is not None:
            out["vector"] = check_vector(ctx.embedder([out["text"]])[0], ctx.dim)
    if "vector" in changes:
        out["vector"] = check_vector(changes["vector"], ctx.dim)
    if "meta" in changes:
        out["meta"] = dict(check_meta(changes["meta"], ctx.limits))
    if "importance" in changes:
        out["importance"] = check_number(changes["importance"], "importance")
    for key in ("valid_from", "valid_to"):
        if key in changes:
            out[key] = check_time(changes[key], key)
    if out.get("valid_to", old.valid_to) < out.get("valid_from", old.valid_from):
        raise InvalidInputError("valid_to", "ends before valid_from")
    return out


def as_int(value: Any, field: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (a bool is not one), within ``low``..``high`` where given.

    Raises:
        InvalidInputError: naming ``field``.
    """
    is_int = not isinstance(value, bool) and isinstance(value, int | np.integer)
    if is_int and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    if low is None and high is None:
        raise WrongTypeError(field, f"expected an int, got {type(value).__name__}")
    bound = f">= {low}" if high is None else f"in {low}..{high}"
    raise InvalidInputError(field, f"expected an int {bound}, got {value!r}")


def as_k(value: Any) -> int:
    return as_int(value, "k", low=1, high=1000)


def as_id(value: Any) -> int:
    return as_int(value, "item_id")
