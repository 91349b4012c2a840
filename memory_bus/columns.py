"""A write batch's columns, each checked in one pass: texts, metas, numbers, times,
validity, writers, the token budget and the vectors.

:func:`~hivemem.memory_bus.validation.checked_batch` runs them all on a
:class:`~hivemem.memory_bus.batch.WriteBatch` before the tier changes anything; the
checks that need the tier's settings (access, dimension, embedder, token budget) take
them as arguments. Error fields name the first bad row, as ``items[i].<field>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hivemem.memory_bus.batch import Vectors
from hivemem.memory_bus.config import NamespaceMode, TierConfig
from hivemem.memory_bus.errors import (
    AccessDeniedError,
    CapacityError,
    InvalidInputError,
    NonFiniteError,
    TooLargeError,
    WrongTypeError,
    in_row,
)
from hivemem.memory_bus.interfaces import Caller, Embedder
from hivemem.memory_bus.item import (
    INF,
    Limits,
    check_matrix,
    check_meta,
    check_number,
    check_text,
    check_time,
    check_vector,
    checked_meta,
    count_tokens,
)

_SMALL = 16  # up to this many rows, a Python loop checks numbers faster than numpy


def _first(values: Sequence[Any], bad: Any) -> int:
    """Position of the first value for which ``bad(value)`` holds."""
    return next(i for i, v in enumerate(values) if bad(v))


def column_of(values: Any, n: int, name: str) -> list[Any]:
    """``values`` as a list of ``n`` values (a list or tuple of any other length is refused)."""
    if not isinstance(values, list | tuple):
        raise WrongTypeError(f"items[].{name}", f"expected a list, got {type(values).__name__}")
    if len(values) != n:
        raise InvalidInputError(f"items[].{name}", f"{len(values)} values for {n} rows")
    return list(values)


def check_texts(texts: Any, n: int, limits: Limits) -> list[str]:
    """Every row's text is a str within ``limits.max_text_chars``."""
    texts = column_of(texts, n, "text")
    if not texts:
        return texts
    if set(map(type, texts)) != {str}:
        i = _first(texts, lambda t: not isinstance(t, str))
        check_text(texts[i], limits, f"items[{i}].text")
    if max(map(len, texts)) > limits.max_text_chars:
        i = _first(texts, lambda t: len(t) > limits.max_text_chars)
        check_text(texts[i], limits, f"items[{i}].text")
    return texts


def check_metas(metas: Any, n: int, limits: Limits) -> list[dict[str, Any]] | None:
    """Every row's meta passes :func:`~hivemem.memory_bus.item.check_meta`; None if all empty."""
    if metas is None:
        return None
    metas = column_of(metas, n, "meta")
    if set(map(type, metas)) <= {dict} and not any(metas):
        return None
    for i, meta in enumerate(metas):
        if meta:
            try:
                checked_meta(meta, limits)
            except (InvalidInputError, NonFiniteError, TooLargeError) as exc:
                raise in_row(exc, i) from None
        elif not isinstance(meta, dict):
            check_meta(meta, limits)
    return metas


def check_numbers(values: Any, n: int, name: str) -> list[float] | None:
    """Every row's number is finite (bools refused); None stays None."""
    if values is None:
        return None
    values = column_of(values, n, name)
    if set(map(type, values)) <= {int, float}:
        if n <= _SMALL:
            if all(-INF < v < INF for v in values):
                return [float(v) for v in values]
        elif np.isfinite(np.asarray(values, dtype=np.float64)).all():
            return [float(v) for v in values]
    return [check_number(v, f"items[{i}].{name}") for i, v in enumerate(values)]


def check_times(
    values: Any, n: int, name: str, none_ok: bool, open_ok: bool = True
) -> list[Any] | None:
    """Every row's time is finite, or ``inf`` where ``open_ok`` (an open end), or None
    where ``none_ok``; None stays None."""
    if values is None:
        return None
    values = column_of(values, n, name)
    kinds = set(map(type, values))
    if kinds <= ({int, float, type(None)} if none_ok else {int, float}):
        plain = [v for v in values if v is not None] if none_ok else values
        top = INF if open_ok else math.nextafter(INF, 0)
        if all(-INF < v <= top for v in plain):  # False for NaN and -inf
            return [None if v is None else float(v) for v in values]
    check = check_time if open_ok else check_number
    return [
        None if (none_ok and v is None) else check(v, f"items[{i}].{name}")
        for i, v in enumerate(values)
    ]


def check_validity(valid_from: list[Any] | None, valid_to: list[Any] | None, now: float) -> None:
    """No row's validity ends before it starts."""
    if valid_to is None or open_ended(valid_to):
        return
    starts = [now] * len(valid_to) if valid_from is None else valid_from
    for i, (start, end) in enumerate(zip(starts, valid_to, strict=True)):
        if end < (now if start is None else start):
            raise InvalidInputError(f"items[{i}].valid_to", "ends before valid_from")


def open_ended(values: list[float] | None) -> bool:
    """Whether a ``valid_to`` column is absent or all ``inf``."""
    return values is None or all(v == INF for v in values)


# --- checks that need the tier's settings ---


def check_writers(
    callers: list[Caller],
    namespaces: list[str],
    levels: list[int] | None,
    check: Callable[[Caller, str, str, int | None], None],
) -> None:
    """Access of every distinct (caller, namespace, level) of a batch, checked once.

    Args:
        callers: Who proposes each row.
        namespaces: The namespace of each row.
        levels: Each row's checked level; None: the tier has no levels.
        check: The tier's access check, ``check(caller, namespace, action, level)``.
    """
    if set(map(type, namespaces)) - {str}:
        bad = next(ns for ns in namespaces if type(ns) is not str)
        raise WrongTypeError("namespace", f"expected a non-empty str, got {type(bad).__name__}")
    n = len(callers)
    if not n:
        return
    if levels is None and callers.count(callers[0]) == namespaces.count(namespaces[0]) == n:
        check(callers[0], namespaces[0], "write", None)  # one writer, one namespace
        return
    rows = zip(callers, namespaces, levels or [-1] * n, strict=True)
    seen: set[tuple[int, str, int]] = set()
    for i, (caller, namespace, level) in enumerate(rows):
        key = (id(caller), namespace, level)
        if key not in seen:
            seen.add(key)
            try:
                check(caller, namespace, "write", None if levels is None else level)
            except AccessDeniedError as exc:
                raise in_row(exc, i) from None


def check_budget(texts: list[str], config: TierConfig) -> None:
    """No row's text has more tokens than a ``token_budget`` tier can ever hold."""
    budget = config.token_budget
    if config.mode is not NamespaceMode.TOKEN_BUDGET or budget is None:
        return
    for text in texts:
        tokens = count_tokens(text)
        if tokens > budget:
            raise CapacityError(
                f"{tokens} tokens can never fit a budget of {budget}", tokens=tokens
            )


def batch_vectors(
    vectors: Vectors, texts: list[str], dim: int, embedder: Embedder | None, mode: NamespaceMode
) -> np.ndarray:
    """The batch's (n, dim) float32 matrix, embedding the texts of rows without a vector."""
    n = len(texts)
    if isinstance(vectors, np.ndarray):
        if vectors.ndim == 2 and len(vectors) != n:
            raise InvalidInputError("items[].vector", f"{len(vectors)} vectors for {n} rows")
        return check_matrix(vectors, dim, "items[].vector")
    given: list[Any] = column_of(vectors, n, "vector") if vectors is not None else [None] * n
    if not given:
        return np.empty((0, dim), dtype=np.float32)
    if n == 1 and isinstance(given[0], np.ndarray) and given[0].ndim == 1:
        return check_matrix(given[0].reshape(1, -1), dim, "items[0].vector")
    if all(v is not None for v in given):
        try:  # the common case, checked in one pass over a matrix
            return check_matrix(np.array(given, dtype=np.float32), dim, "items[].vector")
        except (TypeError, ValueError, InvalidInputError):
            pass  # the rows below name the first bad one
    return np.stack(_vectors(given, texts, dim, embedder, mode))


def _vectors(
    given: list[Any], texts: list[str], dim: int, embedder: Embedder | None, mode: NamespaceMode
) -> list[np.ndarray]:
    """Each row's vector (checked), embedding in one batch those that came without one."""
    out: list[np.ndarray | None] = [None] * len(given)
    missing = []
    for i, vector in enumerate(given):
        if vector is not None:
            out[i] = check_vector(vector, dim, f"items[{i}].vector")
        else:
            missing.append(i)
    if missing:
        if embedder is None or mode is NamespaceMode.VECTOR:
            raise InvalidInputError(
                f"items[{missing[0]}].vector", "required: no embedder for this tier"
            )
        embedded = check_matrix(embedder([texts[i] for i in missing]), dim, "embedder output")
        for row, i in enumerate(missing):
            out[i] = embedded[row]
    return [v for v in out if v is not None]
