"""How a tier's reads find their items: batched search queries grouped for one index call
per group, and the pages of a scan.

Kept apart from :mod:`hivemem.memory_bus.tiers` because it is a sub-algorithm of its own:
grouping many queries by namespace, ``k``, ``as_of`` and what their caller may see, and
stacking their vectors into the matrices the index takes, naming a bad query by its
position. The tier passes in what depends on it (its access check, what a caller may see).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import HivememError, InvalidInputError
from hivemem.memory_bus.interfaces import Caller, ScanPage, SearchRequest
from hivemem.memory_bus.item import Item, check_matrix, check_number, check_vector
from hivemem.memory_bus.namespace import Namespace
from hivemem.memory_bus.validation import as_k

_Group = tuple[str, int, float | None, Callable[[Item], bool] | None]
"""Search queries answered together: namespace, k, as_of, and what their caller may see."""


def group_queries(
    requests: Sequence[SearchRequest],
    check: Callable[[Caller, str, str], None],
    visible_to: Callable[[Caller], Callable[[Item], bool] | None],
    dim: int,
) -> dict[_Group, tuple[list[int], np.ndarray]]:
    """Queries by (namespace, k, as_of, what the caller may see), in positions."""
    groups: dict[_Group, tuple[list[int], list[Any]]] = {}
    seen: dict[Caller, Callable[[Item], bool] | None] = {}
    for pos, req in enumerate(requests):
        if not isinstance(req, SearchRequest):
            raise InvalidInputError("requests", f"expected SearchRequest, got {type(req).__name__}")
        try:
            check(req.caller, req.namespace, "read")
            k = as_k(req.k)
            as_of = None if req.as_of is None else check_number(req.as_of, "as_of")
        except HivememError as exc:  # which request: details.row
            exc.details.setdefault("row", pos)
            raise
        caller = req.caller
        if caller not in seen:  # one predicate per caller: the groups' keys compare it
            seen[caller] = visible_to(caller)
        key = (req.namespace, k, as_of, seen[caller])
        positions, vectors = groups.setdefault(key, ([], []))
        positions.append(pos)
        vectors.append(req.vector)
    stacked = _all_queries([req.vector for req in requests], dim)
    if stacked is not None:
        return {
            key: (positions, _rows(stacked, positions)) for key, (positions, _) in groups.items()
        }
    return {
        key: (positions, _query_matrix(positions, vectors, dim))
        for key, (positions, vectors) in groups.items()
    }


def _all_queries(vectors: list[Any], dim: int) -> np.ndarray | None:
    """Every query as one checked matrix, or None if one is bad (the groups name it)."""
    try:
        return check_matrix(np.stack(vectors), dim, "queries")
    except (ValueError, TypeError, InvalidInputError):
        return None


def _query_matrix(positions: list[int], vectors: list[Any], dim: int) -> np.ndarray:
    """The group's queries as one checked matrix; a bad one is named by its position."""
    try:
        return check_matrix(np.stack(vectors), dim, "queries")
    except (ValueError, TypeError, InvalidInputError):
        for pos, vec in zip(positions, vectors, strict=True):
            check_vector(vec, dim, f"queries[{pos}].vector")
        raise


def _rows(matrix: np.ndarray, positions: list[int]) -> np.ndarray:
    """The rows of ``matrix`` at ``positions``, as a contiguous matrix (a view for one row)."""
    if len(positions) == 1:
        return matrix[positions[0] : positions[0] + 1]
    return matrix[positions]


def page(ns: Namespace, after: int, limit: int, keep: Callable[[Item], bool] | None) -> ScanPage:
    """The first ``limit`` items of ``ns`` by id above ``after`` that ``keep`` keeps."""
    ids = ns.ids_in_order()
    pos = int(np.searchsorted(ids, after, side="right"))
    listed: list[Item] = []
    while pos < len(ids):
        for item_id in ids[pos : pos + limit].tolist():
            pos += 1
            item = ns.item(item_id)  # builds the pending batch that holds it, not all
            assert item is not None, f"{item_id} listed but not held"
            if keep is None or keep(item):
                listed.append(item)
                if len(listed) == limit:
                    return ScanPage(listed, item_id if pos < len(ids) else None)
    return ScanPage(listed, None)
