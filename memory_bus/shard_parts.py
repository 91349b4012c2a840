"""The parts of a batch a sharded client splits, and the error of one that partly failed.

:class:`~hivemem.memory_bus.sharding.AsyncShardedClient` splits a ``write_many`` or a
``search_many`` by the shard each row's namespace lives on and sends the parts at once.
What is here knows the parts: which columns of a columnar batch cannot be cut into rows
(:func:`uncut_column`), each part's outcome (:class:`Part`), and the one error a caller
gets when some parts failed (:func:`failure`): the first refused row's, numbered as the
caller sent it, and, of a batch over several shards, what every part did (applied,
refused or unknown: a shard's part is not undone when another's fails). It is apart from
the client because it is the one sub-algorithm of merging failures, whoever sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from hivemem.memory_bus.client import BusTimeoutError, RemoteError
from hivemem.memory_bus.errors import HivememError, InvalidInputError, JournalSyncError, in_row
from hivemem.memory_bus.interfaces import WriteResult

BATCH_KEYS = {"write_many": "items", "search_many": "queries"}
"""Batch ops and the argument holding their entries (each entry names its namespace)."""

CHECKED_AFTER_ACCESS = ("meta", "importance", "valid_from", "valid_to")
"""Write columns whose length a server checks only after every row's access and place
(a batch sent whole to one shard would be refused for the rows another shard owns): of
the wrong length, the client refuses them itself, with the server's error."""


def uncut_column(columns: dict[str, Any], n: int) -> str | None:
    """The first column of an ``n``-row batch (-1: ``text`` is no list) that cannot be
    cut into rows, ``namespace`` and ``text`` first: not a list of ``n`` values, or
    vectors not float32 bytes of ``n`` rows. None if every one can."""
    if n < 0:
        return "text"
    namespaces = columns.get("namespace")
    if not isinstance(namespaces, list) or len(namespaces) != n:
        return "namespace"
    for name, values in columns.items():
        if name == "vector":
            if type(values) is not bytes or not n or len(values) % (4 * n):
                return name
        elif isinstance(values, list) and len(values) != n:
            return name
    return None


_ROW_NAME = re.compile(r"\b(items|queries)\[(\d+)\]")
"""How an error names a batch row (``items[3].text``, ``... (items[3])``)."""


@dataclass
class Part:
    """One shard's part of a batch: the caller's rows it holds, and how it ended."""

    shard: int
    rows: list[int]
    error: Exception | None  # None: answered

    @property
    def outcome(self) -> str:
        """``applied`` (answered), ``refused`` (by the shard, whole) or ``unknown``."""
        if self.error is None:
            return "applied"
        return "refused" if _refused(self.error) else "unknown"

    def first_row(self) -> int:
        """The row its error names (a refusal's), else its first row."""
        row = self.error.details.get("row") if isinstance(self.error, HivememError) else None
        return row if isinstance(row, int) and not isinstance(row, bool) else self.rows[0]


def _refused(exc: Exception) -> bool:
    """Whether ``exc`` says its part was not applied at all: a shard's error reply (a
    server checks a batch whole before it applies any of it) or the client's own refusal
    before sending. Not so a timeout, a transport failure or a closed client (the request
    may have been applied), a failed fsync, or an internal or unknown error."""
    return (
        isinstance(exc, HivememError)
        and type(exc) not in (HivememError, RemoteError)
        and not isinstance(exc, BusTimeoutError | JournalSyncError)
    )


def failure(op: str, parts: list[Part], merged: list[Any]) -> Exception:
    """The error of a batch some of whose ``parts`` failed: the first refused row's if
    any, else the first failed part's; of a batch on several shards, with every part's
    outcome (see the module docstring)."""
    failed = [part for part in parts if part.error is not None]
    for part in failed:
        if isinstance(part.error, HivememError) and _refused(part.error):
            _numbered_as_sent(part.error, part.rows, BATCH_KEYS[op], len(parts) > 1)
    first = min(failed, key=lambda part: (part.outcome != "refused", part.first_row()))
    if len(parts) == 1:
        return cast(Exception, first.error)
    return _partly_applied(op, first, parts, merged)


def _numbered_as_sent(
    exc: HivememError, rows: list[int], key: str = "items", split: bool = True
) -> HivememError:
    """``exc``, raised by a shard about its part of a batch (the caller's ``rows``, in
    order), made to name the caller's row: the shard numbered its part from 0.

    The shard's row is ``details["row"]``, else the ``items[N]`` (``queries[N]``) that
    begins its field or appears in its message (a batch's column checks name the row
    there alone). A part of one namespace and one writer has its access checked once,
    and refused naming no row: of a batch ``split`` over shards (several namespaces,
    whose rows one bus checks one by one) the row is then the part's first. Any other
    error that names no row is about the request as a whole (its tier, ``now``): it is
    left as it is, as one bus gives it.
    """
    local = _local_row(exc)
    if local is None and split and isinstance(exc.details.get("namespace"), str):
        return in_row(exc, rows[0], key)
    if local is None or not 0 <= local < len(rows):
        return exc  # about the part as a whole
    row = rows[local]

    def renamed(text: str) -> str:
        return _ROW_NAME.sub(lambda m: f"{m[1]}[{row}]" if int(m[2]) == local else m[0], text)

    exc.message = renamed(exc.message)
    exc.args = (exc.message,)
    field = exc.details.get("field")
    if isinstance(field, str):
        exc.details["field"] = renamed(field)
        if isinstance(exc, InvalidInputError):
            exc.field = exc.details["field"]
    exc.details["row"] = row
    return exc


def _local_row(exc: HivememError) -> int | None:
    """The row of its part that ``exc`` names, numbered as the shard did; None if none."""
    row = exc.details.get("row")
    if isinstance(row, int) and not isinstance(row, bool):
        return row
    field = exc.details.get("field")
    named = _ROW_NAME.match(field) if isinstance(field, str) else None
    named = named or _ROW_NAME.search(exc.message)
    return int(named[2]) if named else None


def _partly_applied(op: str, first: Part, parts: list[Part], merged: list[Any]) -> HivememError:
    """``first``'s error, of a batch split over shards, made to give every part's
    outcome as plain data, and to say which rows may be sent again: of a ``write_many``,
    the rows applied with their results (``details["applied"]``); of a ``search_many``,
    the queries answered (``details["answered"]``), whose hits count as recalled at
    its ``now`` though the caller gets none of them."""
    summaries = [_part_summary(part) for part in parts]
    exc = first.error
    if not isinstance(exc, HivememError):
        exc = HivememError(f"{op}'s part on shard {first.shard} failed: {exc!r}")
        exc.__cause__ = first.error
    rows = {o: sorted(i for p in parts if p.outcome == o for i in p.rows) for o in _OUTCOMES}
    if op == "search_many":
        exc.details["answered"] = rows["applied"]
    else:
        exc.details["applied"] = [_plain_result(i, merged[i]) for i in rows["applied"]]
    exc.details.update(refused=rows["refused"], unknown=rows["unknown"], parts=summaries)
    why = "; ".join(_said(op, outcome, rows[outcome]) for outcome in _OUTCOMES if rows[outcome])
    exc.message = f"{exc.message}; a {op} split over shards is not atomic: {why}"
    exc.args = (exc.message,)
    return exc


_OUTCOMES = ("applied", "refused", "unknown")

_MEANING = {
    "applied": "applied (details['applied'], with their results)",
    "refused": "refused, none of them applied: safe to send again once fixed (details['refused'])",
    "unknown": "of unknown outcome (no reply: they may be applied): look before sending "
    "them again (details['unknown'])",
}


_ANSWERED = "answered, their hits recalled at its now if one was given (details['answered'])"


def _said(op: str, outcome: str, rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    if op == "search_many":
        return f"queries {shown} " + (_ANSWERED if outcome == "applied" else _MEANING[outcome])
    return f"rows {shown} {_MEANING[outcome]}"


def _part_summary(part: Part) -> dict[str, Any]:
    """A part's shard, rows and outcome, with its error's code and message if it failed."""
    summary: dict[str, Any] = {"shard": part.shard, "rows": part.rows, "outcome": part.outcome}
    if part.error is not None:
        summary["code"] = getattr(part.error, "code", type(part.error).__name__)
        summary["message"] = str(part.error)
    return summary


def _plain_result(row: int, result: Any) -> dict[str, Any]:
    """One applied row's result as plain data (error details must be msgpack-safe)."""
    if isinstance(result, WriteResult):
        evicted = [int(i) for i in result.evicted]
        return {
            "row": row,
            "op": result.op.value,
            "item_id": int(result.item_id),
            "evicted": evicted,
        }
    if isinstance(result, dict):  # not decoded: the wire's map already
        return {"row": row, **result}
    return {"row": row, "result": result}
