"""Proposed writes in columns, checked a column at a time.

A batch of writes arrives as columns (the bus's columnar ``write_many``: one list of
texts, one packed float32 matrix, ...) or as rows (``WriteRequest`` objects). Either way
the tier checks each column in one pass, over a list or a numpy array, instead of
building and checking an object per item; a batch whose rows the write policy adds
without looking at neighbours is then stored the same way (see
:meth:`~hivemem.memory_bus.namespace.Namespace.append`).

The column checks are in :mod:`hivemem.memory_bus.columns`; the tier runs them all in
:func:`~hivemem.memory_bus.validation.checked_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import (
    InvalidInputError,
)
from hivemem.memory_bus.interfaces import Caller, WriteRequest, WriteResult
from hivemem.memory_bus.item import (
    INF,
    Item,
    NewItem,
    TierName,
    WriteOp,
    count_tokens_many,
)

Vectors = np.ndarray | list[np.ndarray | None] | None
"""An (n, dim) matrix; a list with None where the tier must embed the text; or None: embed all."""


@dataclass(slots=True)
class WriteBatch:
    """n proposed writes, one list (or matrix) per field.

    Attributes:
        callers: Who proposes each row.
        namespaces: The namespace of each row.
        texts: The text of each row.
        vectors: See :data:`Vectors`.
        metas: One map per row; None means every row's is empty.
        importance: One number per row; None means 0 for every row.
        valid_from: One time (or None: the write's ``now``) per row; None means all ``now``.
        valid_to: One time (``inf``: open-ended) per row; None means all ``inf``.
        levels: One graph level per row; None means level 0 for every row.
    """

    callers: list[Caller]
    namespaces: list[str]
    texts: list[str]
    vectors: Vectors = None
    metas: list[dict[str, Any]] | None = None
    importance: list[float] | None = None
    valid_from: list[float | None] | None = None
    valid_to: list[float] | None = None
    levels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_requests(cls, requests: Sequence[WriteRequest]) -> WriteBatch:
        """The columns of row-form requests (``VectorTier.write_many``).

        Raises:
            InvalidInputError: an entry is not a WriteRequest or its item not a NewItem.
        """
        for req in requests:
            if not isinstance(req, WriteRequest):
                raise InvalidInputError(
                    "requests", f"expected WriteRequest, got {type(req).__name__}"
                )
            if not isinstance(req.item, NewItem):
                raise InvalidInputError("item", f"expected NewItem, got {type(req.item).__name__}")
        items = [req.item for req in requests]
        return cls(
            callers=[req.caller for req in requests],
            namespaces=[req.namespace for req in requests],
            texts=[it.text for it in items],
            vectors=[it.vector for it in items],
            metas=_unless_default([it.meta for it in items], {}),
            importance=_unless_default([it.importance for it in items], DEFAULTS["importance"]),
            valid_from=_unless_default([it.valid_from for it in items], DEFAULTS["valid_from"]),
            valid_to=_unless_default([it.valid_to for it in items], DEFAULTS["valid_to"]),
            levels=_unless_default([it.level for it in items], DEFAULTS["level"]),
        )

    @classmethod
    def of_item(cls, caller: Caller, namespace: str, item: NewItem) -> WriteBatch:
        """The one-row batch of a single write (:meth:`from_requests` of one request,
        without its lists: a single write's whole server time is ~50 us here).

        Raises:
            InvalidInputError: ``item`` is not a NewItem.
        """
        if not isinstance(item, NewItem):
            raise InvalidInputError("item", f"expected NewItem, got {type(item).__name__}")
        meta, importance = item.meta, item.importance
        valid_from, valid_to, level = item.valid_from, item.valid_to, item.level
        return cls(
            [caller],
            [namespace],
            [item.text],
            [item.vector],
            None if type(meta) is dict and not meta else [meta],
            None if type(importance) is float and importance == 0.0 else [importance],
            None if valid_from is None else [valid_from],
            None if type(valid_to) is float and valid_to == INF else [valid_to],
            None if type(level) is int and level == 0 else [level],
        )

    def rows(self, positions: Sequence[int]) -> WriteBatch:
        """The batch of the rows at ``positions`` (in that order)."""

        def pick(column: Any) -> Any:
            if column is None:
                return None
            if isinstance(column, np.ndarray):
                return column[list(positions)]
            return [column[i] for i in positions]

        return WriteBatch(
            [self.callers[i] for i in positions],
            [self.namespaces[i] for i in positions],
            [self.texts[i] for i in positions],
            pick(self.vectors),
            pick(self.metas),
            pick(self.importance),
            pick(self.valid_from),
            pick(self.valid_to),
            pick(self.levels),
        )


@dataclass(slots=True)
class BatchResult:
    """What a batch of writes did, a column per field.

    Attributes:
        ops: The write policy's decision for each row.
        item_ids: Each row's new, updated, deleted or duplicate item id, or -1.
        evicted: Row -> ids evicted to make room for it (rows that evicted nothing are absent).
    """

    ops: list[WriteOp]
    item_ids: list[int]
    evicted: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def from_results(cls, results: Sequence[WriteResult]) -> BatchResult:
        """Columns of per-row results."""
        return cls(
            [r.op for r in results],
            [r.item_id for r in results],
            {i: r.evicted for i, r in enumerate(results) if r.evicted},
        )

    def results(self) -> list[WriteResult]:
        """One :class:`WriteResult` per row."""
        evicted = self.evicted
        return [
            WriteResult(op, item_id, list(evicted.get(i, ())))
            for i, (op, item_id) in enumerate(zip(self.ops, self.item_ids, strict=True))
        ]


@dataclass(slots=True)
class NewRows:
    """The rows of a checked batch with their ids, as the tier stores them.

    Attributes:
        ids: One id per row (-1 for proposals not yet added).
        batch: The checked batch (its ``vectors`` an (n, dim) matrix).
        now: The time of the write.
    """

    ids: Sequence[int]
    batch: WriteBatch
    now: float
    _tokens: int = -1

    def vectors(self) -> np.ndarray:
        """The (n, dim) matrix of the rows' vectors."""
        vectors = self.batch.vectors
        if not isinstance(vectors, np.ndarray):
            raise TypeError("NewRows needs a checked batch, whose vectors are a matrix")
        return vectors

    def tokens(self) -> int:
        """Whitespace tokens of the rows' texts (counted once, when first asked)."""
        if self._tokens < 0:
            self._tokens = count_tokens_many(self.batch.texts)
        return self._tokens

    def build(self, tier: TierName, vectors: np.ndarray | None = None) -> list[Item]:
        """The rows as items, in order (with ``vectors`` in place of the batch's, if given)."""
        b, now = self.batch, self.now
        n = len(b)
        rows = zip(
            self.ids,
            b.namespaces,
            b.texts,
            self.vectors() if vectors is None else vectors,
            b.metas or [{}] * n,
            b.importance or [0.0] * n,
            b.valid_from or [None] * n,
            b.valid_to or [INF] * n,
            b.levels or [0] * n,
            strict=True,
        )
        return [
            Item(
                item_id,
                tier,
                namespace,
                text,
                vector,
                dict(meta) if meta else {},
                imp,
                now,
                now,
                0,
                1,
                now if start is None else start,
                end,
                level,
            )
            for item_id, namespace, text, vector, meta, imp, start, end, level in rows
        ]

    def to_state(self) -> dict[str, Any]:
        """The rows as a snapshot keeps them: msgpack-safe columns, without the vectors
        (the namespace's index holds them, in its own state) or the callers (stored rows
        no longer need them)."""
        b, ids = self.batch, self.ids
        return {
            "ids": [ids.start, ids.stop, ids.step] if isinstance(ids, range) else None,
            "id_list": None if isinstance(ids, range) else [int(i) for i in ids],
            "now": self.now,
            "texts": list(b.texts),
            "metas": _plain(b.metas),
            "importance": _plain(b.importance),
            "valid_from": _plain(b.valid_from),
            "valid_to": _plain(b.valid_to),
            "levels": _plain(b.levels),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], namespace: str) -> NewRows:
        """Inverse of :meth:`to_state`, for rows of ``namespace``; built with vectors
        given (:meth:`build`), as the namespace builds them from its index."""
        ids: Sequence[int] = (
            range(*state["ids"]) if state["ids"] is not None else list(state["id_list"])
        )
        texts = list(state["texts"])
        batch = WriteBatch(
            callers=[],
            namespaces=[namespace] * len(texts),
            texts=texts,
            metas=state["metas"],
            importance=state["importance"],
            valid_from=state["valid_from"],
            valid_to=state["valid_to"],
            levels=state["levels"],
        )
        return cls(ids, batch, float(state["now"]))


def _plain(column: Any) -> list[Any] | None:
    """A column as msgpack packs it: None, or a list."""
    return None if column is None else list(column)


# --- column checks ---


DEFAULTS: dict[str, Any] = {"importance": 0.0, "valid_from": None, "valid_to": INF, "level": 0}
"""The value a row takes when its column is left out (``meta``: empty)."""


def _unless_default(values: list[Any], default: Any) -> list[Any] | None:
    """None (the column's "every row the default") if every value is ``default``, else ``values``.

    Of exactly the default's type: a ``False`` importance, or a float level on the graph
    tier, is kept and refused by its check.
    """
    kind = type(default)
    for v in values:
        if type(v) is not kind or v != default:
            return values
    return None
