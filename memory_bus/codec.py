"""Codecs of the values inside bus payloads: vectors, items, hits, write columns, results.

Each value has an encoder, to the msgpack-ready form a payload carries, and a decoder,
back to the store's types (:class:`~hivemem.memory_bus.item.NewItem`,
:class:`~hivemem.memory_bus.item.Item`, :class:`~hivemem.memory_bus.interfaces.Hit`,
:class:`~hivemem.memory_bus.interfaces.WriteResult`,
:class:`~hivemem.memory_bus.batch.BatchResult`). The format they follow is
:mod:`hivemem.memory_bus.protocol`'s, and its constants are defined there:
:data:`~hivemem.memory_bus.protocol.ITEM_FIELDS` orders an item's map and a compact hit
row ``[id, score, *ITEM_FIELDS]`` (so ``row[3]`` is the tier and ``row[6]`` the vector),
:data:`~hivemem.memory_bus.protocol.WRITE_COLUMNS` names the columns of a columnar
``write_many``. The keys of the maps written here are the format's field names, as
``docs/protocol.md`` lists them; vectors are raw little-endian float32 bytes.
A malformed value raises :class:`~hivemem.memory_bus.protocol.ProtocolError`.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from hivemem.memory_bus.arguments import field, plain_number
from hivemem.memory_bus.batch import DEFAULTS, BatchResult
from hivemem.memory_bus.errors import HivememError, InvalidInputError, as_single
from hivemem.memory_bus.interfaces import Hit, ScanPage, WriteResult
from hivemem.memory_bus.item import (
    INF,
    TIER_BY_VALUE,
    WRITE_OP_VALUE,
    Item,
    NewItem,
    TierName,
    WriteOp,
)
from hivemem.memory_bus.protocol import (
    ITEM_FIELDS,
    NUMBER,
    Code,
    ProtocolError,
)


def vector_to_bytes(vector: np.ndarray, name: str = "vector") -> bytes:
    """A float32 vector as raw little-endian bytes.

    Raises:
        InvalidInputError: not a 1-d array of numbers (a (2, 192) array went out as a
            384-d vector).
    """
    try:
        arr = np.asarray(vector, dtype="<f4")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(name, f"not a numeric vector ({exc})") from exc
    if arr.ndim != 1:
        raise InvalidInputError(name, f"expected a 1-d vector, got shape {arr.shape}")
    return arr.tobytes()


def vector_from_bytes(raw: Any, name: str = "vector") -> np.ndarray:
    """Raw bytes back to a float32 vector (dimension and finiteness are the store's checks)."""
    if not isinstance(raw, bytes) or len(raw) % 4:
        raise ProtocolError(Code.BAD_REQUEST, f"{name} must be float32 bytes", field=name)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def encode_new_item(item: NewItem) -> dict[str, Any]:
    """A proposed item for the wire."""
    out: dict[str, Any] = {
        "text": item.text,
        "meta": item.meta,
        "importance": item.importance,
        "valid_from": item.valid_from,
        "valid_to": item.valid_to,
        "level": item.level,
    }
    if item.vector is not None:
        out["vector"] = vector_to_bytes(item.vector)
    return out


def decode_new_item(raw: Any) -> NewItem:
    """A proposed item from the wire, every field type-checked; an error names the item's
    own field (``text``), for the caller to place (:func:`decode_item_arg`, ``in_row``)."""
    fast = _plain_new_item(raw)
    if fast is not None:
        return fast
    if not isinstance(raw, dict):
        raise ProtocolError(Code.BAD_REQUEST, "item must be a map", field="item")
    vector = raw.get("vector")
    return NewItem(
        text=field(raw, "text", str, ""),
        vector=None if vector is None else vector_from_bytes(vector, "vector"),
        meta=field(raw, "meta", dict, {}),
        importance=field(raw, "importance", NUMBER, 0.0),
        valid_from=field(raw, "valid_from", NUMBER, None),
        valid_to=field(raw, "valid_to", NUMBER, INF),
        level=field(raw, "level", int, 0),
    )


def _plain_new_item(raw: Any) -> NewItem | None:
    """The common case of :func:`decode_new_item` in one pass; None sends it the long way.

    Accepts exactly what the checked path accepts and builds the same ``NewItem``; any
    value it is not sure about (a wrong type, NaN, a subclass) goes the long way, which
    names the problem.
    """
    if type(raw) is not dict:
        return None
    get = raw.get
    text, vector, meta = get("text"), get("vector"), get("meta")
    importance, valid_from = get("importance"), get("valid_from")
    valid_to, level = get("valid_to"), get("level")
    if not (
        (text is None or type(text) is str)
        and (vector is None or (type(vector) is bytes and not len(vector) % 4))
        and (meta is None or type(meta) is dict)
        and (importance is None or plain_number(importance))
        and (valid_from is None or plain_number(valid_from))
        and (valid_to is None or plain_number(valid_to))
        and (level is None or type(level) is int)
    ):
        return None
    return NewItem(
        text="" if text is None else text,
        # A read-only view of the request's bytes: the tier copies it into its index.
        vector=None if vector is None else np.frombuffer(vector, dtype="<f4"),
        meta={} if meta is None else meta,
        importance=0.0 if importance is None else importance,
        valid_from=valid_from,
        valid_to=INF if valid_to is None else valid_to,
        level=0 if level is None else level,
    )


def encode_item(item: Item, vectors: bool = True) -> dict[str, Any]:
    """A stored item for the wire (without ``vectors``, its vector is empty bytes)."""
    state = item.to_state()
    if not vectors:
        state["vector"] = b""
    return state


def decode_item(raw: dict[str, Any]) -> Item:
    """A stored item from a reply (:meth:`Item.from_state`, built in one step)."""
    if type(raw) is dict and len(raw) == len(ITEM_FIELDS):
        try:
            return Item(
                raw["id"],
                TIER_BY_VALUE[raw["tier"]],
                raw["namespace"],
                raw["text"],
                np.frombuffer(raw["vector"], dtype=np.float32).copy(),
                raw["meta"],
                raw["importance"],
                raw["created"],
                raw["accessed"],
                raw["hits"],
                raw["version"],
                raw["valid_from"],
                raw["valid_to"],
                raw["level"],
            )
        except (KeyError, TypeError, ValueError):
            pass  # from_state says what is wrong
    return Item.from_state(raw)


def encode_hit(hit: Hit, vectors: bool = True, compact: bool = False) -> Any:
    """A search hit for the wire.

    Args:
        hit: The hit.
        vectors: Without them the item's vector is empty bytes.
        compact: A row ``[id, score, *item fields in ITEM_FIELDS order]`` instead of the
            map ``{"id", "score", "item": {...}}`` (half the bytes, a third of the
            decoding work).

    The item map is :meth:`Item.to_state`'s, key for key, built here in one step because
    a batched search encodes thousands of hits.
    """
    item = hit.item
    vector = item.vector
    raw = (
        (vector.tobytes() if vector.dtype == _F32 else vector.astype(_F32).tobytes())
        if vectors
        else b""
    )
    if compact:
        return [
            hit.id,
            hit.score,
            item.id,
            _TIER_VALUE[item.tier],
            item.namespace,
            item.text,
            raw,
            item.meta,
            item.importance,
            item.created,
            item.accessed,
            item.hits,
            item.version,
            item.valid_from,
            item.valid_to,
            item.level,
        ]
    return {
        "id": hit.id,
        "score": hit.score,
        "item": {
            "id": item.id,
            "tier": _TIER_VALUE[item.tier],
            "namespace": item.namespace,
            "text": item.text,
            "vector": raw,
            "meta": item.meta,
            "importance": item.importance,
            "created": item.created,
            "accessed": item.accessed,
            "hits": item.hits,
            "version": item.version,
            "valid_from": item.valid_from,
            "valid_to": item.valid_to,
            "level": item.level,
        },
    }


_TIER_VALUE = {tier: tier.value for tier in TierName}
_F32 = np.dtype(np.float32)


def encode_scan_page(page: ScanPage, vectors: bool = True) -> dict[str, Any]:
    """A ``scan`` page for the wire: ``{"items": [item, ...], "next": cursor or None}``."""
    return {"items": [encode_item(it, vectors) for it in page.items], "next": page.next}


def decode_scan_page(raw: Any) -> ScanPage:
    """A ``scan`` page from a reply."""
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise ProtocolError(Code.BAD_FRAME, "a scan reply is a map with a list of items")
    cursor = raw.get("next")
    if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)):
        raise ProtocolError(Code.BAD_FRAME, "a scan reply's next is an int or nil")
    return ScanPage([decode_item(it) for it in raw["items"]], cursor)


def decode_hit(raw: Any) -> Hit:
    """A search hit from a reply: a map, or a compact row (see :func:`encode_hit`)."""
    if type(raw) is list:
        return _hit_from_row(raw)
    return Hit(raw["id"], raw["score"], decode_item(raw["item"]))


def _hit_from_row(row: list[Any]) -> Hit:
    if len(row) != 2 + len(ITEM_FIELDS):
        raise ProtocolError(Code.BAD_FRAME, f"a hit row has {len(row)} values")
    vector = row[6]
    item = Item(
        row[2],
        TIER_BY_VALUE.get(row[3]) or TierName(row[3]),
        row[4],
        row[5],
        np.frombuffer(vector, dtype=np.float32).copy() if vector else np.empty(0, np.float32),
        *row[7:],
    )
    return Hit(row[0], row[1], item)


# --- write_many in columns ---------------------------------------------------------------


def encode_write_columns(namespaces: list[str], items: list[NewItem]) -> dict[str, Any] | None:
    """Proposed items as the columns of one ``write_many`` (None if they cannot be).

    ``namespace`` is one str when every row shares it; ``vector`` packs every row's
    float32 vector into one blob (row-major); a column whose every value is the default
    is left out. Items of which some have a vector and some do not have no columnar form.
    """
    n = len(items)
    vectors = [it.vector for it in items]
    columns: dict[str, Any] = {
        "namespace": namespaces[0]
        if n and namespaces.count(namespaces[0]) == n
        else list(namespaces),
        "text": [it.text for it in items],
    }
    if n and all(v is not None for v in vectors):
        try:
            # np.array of a list of equal arrays: one pass (np.stack took 2.5x as long)
            columns["vector"] = np.array(vectors, dtype="<f4").tobytes()
        except ValueError:  # vectors of different lengths: the rows say which is wrong
            return None
    elif any(v is not None for v in vectors):
        return None
    metas = [it.meta for it in items]
    if any(metas):
        columns["meta"] = metas
    rows = list(map(_DEFAULTED, items))
    if rows.count(_DEFAULT_ROW) == n:  # the common case: every row takes every default
        return columns
    for j, (name, default) in enumerate(DEFAULTS.items()):
        values = [row[j] for row in rows]
        if values.count(default) != n:  # list.count compares with ==, as the server's default
            columns[name] = values
    return columns


def decode_item_arg(args: dict[str, Any], name: str) -> NewItem:
    """The item in argument ``name`` (``write``'s ``item``, ``promote``'s ``parent``); an
    error in it names ``name.<field>``, as the store's own checks of that item do."""
    raw = field(args, name, dict)
    try:
        return decode_new_item(raw)
    except HivememError as exc:
        raise as_single(exc, "", f"{name}.") from None


_DEFAULTED = operator.attrgetter(*DEFAULTS)  # a NewItem's fields that have a default column
_DEFAULT_ROW = tuple(DEFAULTS.values())


def take_columns(columns: dict[str, Any], rows: list[int], n: int) -> dict[str, Any]:
    """The columns of the ``rows`` of an n-row columnar batch (sharding splits by rows)."""
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "vector":
            matrix = np.frombuffer(values, dtype="<f4").reshape(n, -1)
            out[name] = matrix[rows].tobytes()
        elif isinstance(values, list):
            out[name] = [values[i] for i in rows]
        else:
            out[name] = values
    return out


def column_vectors(raw: Any, n: int) -> np.ndarray | None:
    """The ``vector`` column as an (n, dim) float32 matrix (None when absent)."""
    if raw is None:
        return None
    if type(raw) is not bytes or not n or len(raw) % (4 * n):
        raise ProtocolError(
            Code.BAD_REQUEST,
            f"column 'vector' must be float32 bytes, dim x 4 bytes for each of {n} rows",
            field="columns.vector",
        )
    return np.frombuffer(raw, dtype="<f4").reshape(n, -1)


def encode_batch_result(result: BatchResult) -> dict[str, Any]:
    """The reply to a columnar ``write_many``: ops, int64 ids as bytes, evictions by row."""
    return {
        "ops": [WRITE_OP_VALUE[op] for op in result.ops],
        "item_ids": np.asarray(result.item_ids, dtype="<i8").tobytes(),
        "evicted": [[row, ids] for row, ids in result.evicted.items()],
    }


def decode_write_results(raw: Any) -> list[WriteResult]:
    """The results of ``write_many``, from a columnar (map) or a row (list) reply."""
    if isinstance(raw, list):
        return [decode_write_result(r) for r in raw]
    ids = np.frombuffer(raw["item_ids"], dtype="<i8").tolist()
    if not raw["evicted"]:
        return [
            WriteResult(_OP_BY_VALUE[op], item_id, [])
            for op, item_id in zip(raw["ops"], ids, strict=True)
        ]
    evicted = {int(row): ids_ for row, ids_ in raw["evicted"]}
    return [
        WriteResult(_OP_BY_VALUE[op], item_id, list(evicted.get(row, ())))
        for row, (op, item_id) in enumerate(zip(raw["ops"], ids, strict=True))
    ]


_OP_BY_VALUE = {op.value: op for op in WriteOp}


def encode_write_result(result: WriteResult) -> dict[str, Any]:
    """A write result for the wire."""
    return {"op": result.op.value, "item_id": result.item_id, "evicted": result.evicted}


def decode_write_result(raw: dict[str, Any]) -> WriteResult:
    """A write result from a reply."""
    return WriteResult(WriteOp(raw["op"]), raw["item_id"], list(raw["evicted"]))
