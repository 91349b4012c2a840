"""The memory item, the values that describe a write, and their validation.

An :class:`Item` is what every tier stores. Times (``created``, ``accessed``,
``valid_from``, ``valid_to``) are *simulation* time, passed in by the caller; the store
never reads the wall clock. Ids are int64 assigned by the store, so they double as faiss
ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import (
    DimensionMismatchError,
    InvalidInputError,
    NonFiniteError,
    TooLargeError,
    UnknownNameError,
    WrongTypeError,
)

INF = math.inf


class TierName(StrEnum):
    """The three tiers of the memory."""

    PRIVATE = "private"
    SHARED = "shared"
    GRAPH = "graph"

    @classmethod
    def parse(cls, value: str | TierName) -> TierName:
        """Return the tier for ``value`` or raise :class:`UnknownNameError`."""
        tier = TIER_BY_VALUE.get(value) if isinstance(value, str) else None  # cls(value) is slow
        if tier is None:
            raise UnknownNameError("tier", str(value), [t.value for t in cls])
        return tier


TIER_BY_VALUE = {str(t.value): t for t in TierName}
"""Each tier by its str value, looked up: ``TierName(value)`` is slow on the read path."""


class WriteOp(StrEnum):
    """Memory-R1's operations, decided by a write policy for a proposed item."""

    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


WRITE_OP_VALUE = {op: op.value for op in WriteOp}
"""Each op's str value, looked up: an enum's ``.value`` is slow on the write path."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one item may hold; checked before anything is changed."""

    max_text_chars: int = 32_768
    max_meta_keys: int = 64
    max_meta_depth: int = 4
    max_meta_str_chars: int = 4_096
    max_batch: int = 4_096


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Item:
    """One memory.

    Attributes:
        id: Store-wide unique int64 id.
        tier: The tier holding it.
        namespace: The agent (private), group (shared) or graph it belongs to.
        text: Its text ("" for vector-only slots).
        vector: float32, unit norm for the built-in embedders.
        meta: String keys, msgpack-safe values.
        importance: A caller's hint, any finite float (Generative Agents use 1..10).
        created: Simulation time of the write.
        accessed: Simulation time of the last recall.
        hits: How many times it was recalled.
        version: 1 on write, +1 on each update.
        valid_from: Start of validity (simulation time).
        valid_to: End of validity; ``inf`` while it holds.
        level: Graph level (0 events, 1 entities/tasks, 2 insights); 0 elsewhere.
    """

    id: int
    tier: TierName
    namespace: str
    text: str
    vector: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    importance: float = 0.0
    created: float = 0.0
    accessed: float = 0.0
    hits: int = 0
    version: int = 1
    valid_from: float = 0.0
    valid_to: float = INF
    level: int = 0

    @property
    def tokens(self) -> int:
        """Token count used by token-budget namespaces (whitespace-separated words)."""
        return count_tokens(self.text)

    @property
    def nbytes(self) -> int:
        """Payload bytes held: UTF-8 text plus the vector."""
        return len(self.text.encode("utf-8")) + int(self.vector.nbytes)

    def valid_at(self, t: float) -> bool:
        """Whether the item holds at simulation time ``t``."""
        return self.valid_from <= t < self.valid_to

    def to_state(self) -> dict[str, Any]:
        """A msgpack-safe dict; the vector travels as raw float32 bytes."""
        return {
            "id": self.id,
            "tier": self.tier.value,
            "namespace": self.namespace,
            "text": self.text,
            "vector": self.vector.astype(np.float32, copy=False).tobytes(),
            "meta": self.meta,
            "importance": self.importance,
            "created": self.created,
            "accessed": self.accessed,
            "hits": self.hits,
            "version": self.version,
            "valid_from": self.valid_from,
            "valid_to": self.valid_to,
            "level": self.level,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Item:
        """Inverse of :meth:`to_state`."""
        fields = dict(state)
        fields["tier"] = TierName(fields["tier"])
        fields["vector"] = np.frombuffer(fields["vector"], dtype=np.float32).copy()
        return cls(**fields)


@dataclass(slots=True)
class NewItem:
    """What a caller proposes to write; the store fills in id, tier, namespace and times.

    ``vector`` may be None when the caller leaves embedding to the store's embedder.
    """

    text: str = ""
    vector: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    importance: float = 0.0
    valid_from: float | None = None
    valid_to: float = INF
    level: int = 0


def count_tokens(text: str) -> int:
    """Whitespace tokens: a cheap, deterministic stand-in for a tokenizer."""
    return len(text.split())


# The ASCII characters str.split() splits on: \t \n \v \f \r, the four separators
# \x1c-\x1f and the space.
_ASCII_SPACE = np.zeros(128, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


def count_tokens_many(texts: list[str]) -> int:
    """``sum(count_tokens(t) for t in texts)``, without building the tokens.

    The bus counts the tokens of every batch it stores (the tokens gauge, token budgets),
    on its owner thread; splitting 64 short texts into their words cost ~21 us a batch
    here, this ~9 us. ASCII text is read as bytes, a token starting wherever a
    non-space follows a space or the start; the texts are joined by a space, which ends a
    token as a text's end does. Other text is split as :func:`count_tokens` does.
    """
    joined = " ".join(texts)
    if not joined:
        return 0
    if not joined.isascii():
        return sum(map(count_tokens, texts))
    space = _ASCII_SPACE[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)]
    return int(np.count_nonzero(space[:-1] & ~space[1:])) + (not space[0])


def check_vector(vector: Any, dim: int, field_name: str = "vector") -> np.ndarray:
    """Return ``vector`` as a contiguous float32 array of shape (dim,) or raise.

    Raises:
        InvalidInputError: not array-like of numbers.
        DimensionMismatchError: wrong length.
        NonFiniteError: NaN or inf.
        InvalidInputError: a component beyond ``MAX_COMPONENT``.
    """
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field_name, f"not a numeric vector ({exc})") from exc
    if arr.ndim != 1:
        raise InvalidInputError(field_name, f"expected a 1-d vector, got shape {arr.shape}")
    if arr.shape[0] != dim:
        raise DimensionMismatchError(field_name, dim, int(arr.shape[0]))
    _check_range(arr, field_name)
    return np.ascontiguousarray(arr)


def check_matrix(vectors: Any, dim: int, field_name: str = "vectors") -> np.ndarray:
    """Like :func:`check_vector` for an (n, dim) batch."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field_name, f"not a numeric matrix ({exc})") from exc
    if arr.ndim != 2:
        raise InvalidInputError(field_name, f"expected an (n, {dim}) matrix, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionMismatchError(field_name, dim, int(arr.shape[1]))
    _check_range(arr, field_name)
    return np.ascontiguousarray(arr)


MAX_COMPONENT = 1e9
"""Largest magnitude of a vector component: an inner product of two such vectors over
65,536 dimensions stays far inside float32 (a larger one overflowed to inf in search)."""


_SQUARES_BOUND = MAX_COMPONENT * MAX_COMPONENT


def _check_range(arr: np.ndarray, field_name: str) -> None:
    """Raise unless every component is finite and within ``MAX_COMPONENT``.

    The common case is proved in one pass: the sum of squares is at least each square
    (its terms are never negative, and rounding keeps a running sum from falling), so a
    sum within ``MAX_COMPONENT ** 2`` bounds every component; NaN or infinity makes the
    sum NaN or infinite, which fails the comparison. A sum past the bound (an infinity,
    or many large but legal components) goes to the exact checks below. One BLAS dot
    reads the rows once, where ``min`` and ``max`` read them twice (2-3x the time).
    An overflow to infinity is what those checks catch: the dot does not raise it (it
    is not a ufunc; ``np.errstate`` around it cost 1.2 us of a 3 us single-row check).
    """
    if arr.size == 0:
        return
    try:
        squares = np.vdot(arr, arr)
    except FloatingPointError:  # should a numpy build check the dot's flags under seterr
        squares = np.inf
    if squares <= _SQUARES_BOUND:
        return
    if arr.min() >= -MAX_COMPONENT and arr.max() <= MAX_COMPONENT:
        return  # min and max are NaN if any component is, and NaN compares False
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(field_name, "contains NaN or infinity")
    raise InvalidInputError(field_name, f"components must lie within +-{MAX_COMPONENT:g}")


def check_number(value: Any, field_name: str) -> float:
    """A finite float (bools are refused: they are almost always a caller's mistake)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise WrongTypeError(field_name, f"expected a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise NonFiniteError(field_name, f"must be finite, got {out}")
    return out


def check_time(value: Any, field_name: str) -> float:
    """A simulation time: finite, or +inf for an open-ended validity."""
    if isinstance(value, float) and value == INF:
        return INF
    return check_number(value, field_name)


def check_text(text: Any, limits: Limits = DEFAULT_LIMITS, field_name: str = "text") -> str:
    """A str within the text limit."""
    if not isinstance(text, str):
        raise WrongTypeError(field_name, f"expected str, got {type(text).__name__}")
    if len(text) > limits.max_text_chars:
        raise TooLargeError(field_name, limits.max_text_chars, len(text))
    return text


_SCALARS = (str, int, float, bool, bytes, type(None))


def check_meta(meta: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A dict with str keys and msgpack-safe values (scalars, lists, dicts), bounded in depth."""
    if not isinstance(meta, dict):
        raise WrongTypeError("meta", f"expected a dict, got {type(meta).__name__}")
    if len(meta) > limits.max_meta_keys:
        raise TooLargeError("meta", limits.max_meta_keys, len(meta))
    _check_meta_value(meta, limits, depth=0, path="meta")
    return meta


def _check_meta_value(value: Any, limits: Limits, depth: int, path: str) -> None:
    if depth > limits.max_meta_depth:
        raise TooLargeError(f"{path} depth", limits.max_meta_depth, depth)
    if isinstance(value, dict):
        for key, sub in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(path, f"keys must be str, got {type(key).__name__}")
            _check_meta_value(sub, limits, depth + 1, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            _check_meta_value(sub, limits, depth + 1, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteError(path, "must be finite")
    elif isinstance(value, str | bytes) and len(value) > limits.max_meta_str_chars:
        raise TooLargeError(path, limits.max_meta_str_chars, len(value))
    elif not isinstance(value, _SCALARS):
        raise InvalidInputError(path, f"type {type(value).__name__} is not msgpack-safe")


def checked_meta(meta: Any, limits: Limits) -> dict[str, Any]:
    """:func:`check_meta`, accepting a flat map of plain scalars in one pass.

    A map with str keys and str/bytes (within the limit), int, bool, None or finite
    float values passes ``check_meta`` unchanged; anything else goes through it.
    """
    if type(meta) is dict and len(meta) <= limits.max_meta_keys and limits.max_meta_depth >= 1:
        cap = limits.max_meta_str_chars
        for key, value in meta.items():
            kind = type(value)
            if type(key) is not str:
                break
            if kind is str or kind is bytes:
                if len(value) > cap:
                    break
            elif kind is float:
                if value - value != 0.0:  # inf or NaN
                    break
            elif not (kind is int or kind is bool or value is None):
                break
        else:
            return meta
    return check_meta(meta, limits)


def version_record(item: Item) -> dict[str, Any]:
    """The user-visible fields of one version of an item."""
    return {
        "version": item.version,
        "text": item.text,
        "meta": item.meta,
        "importance": item.importance,
        "valid_from": item.valid_from,
        "valid_to": item.valid_to,
    }
