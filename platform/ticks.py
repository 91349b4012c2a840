"""A run's rows, one per tick: kept as JSON lines, and written to a file as they come.

A ``capacity_stream`` row as a dict of dicts held 2.0 kB of Python objects, as its JSON
line 0.3 kB (tracemalloc over the 30,536 rows of one run), so a 100,000-tick run keeps
~32 MB of rows instead of ~200 MB; encoding a row takes ~14 us. With a
file, each row is written (and flushed to the kernel) the moment its tick ends: a run
that is stopped, or dies, leaves every tick it finished in ``ticks.jsonl``.

    >>> rows = TickRows()
    >>> rows.append({"t": 0, "score": 0.5})
    >>> rows[-1]["score"], len(rows)
    (0.5, 1)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, TextIO, overload

from hivemem.memory_bus.errors import ConfigError

Row = dict[str, Any]

RUNNER_COLUMNS = frozenset(
    {"t", "score", "recalls", "hits", "writes", "promotions", "ops", "evicted", "items"}
)
"""The columns of a row the runner writes itself; a task's own counters go beside them
and may not take their names (``docs/scenarios.md``, ticks.jsonl)."""


def check_own_columns(family: str, parts: dict[str, float]) -> None:
    """Refuse a task's counter named as a column the runner writes itself: it replaced
    that column in the tick's row (``t``), or was replaced by it, without a word.

    Raises:
        ConfigError: a counter of ``parts`` is named as one of :data:`RUNNER_COLUMNS`.
    """
    taken = sorted(parts.keys() & RUNNER_COLUMNS)
    if taken:
        raise ConfigError(
            f"task family {family!r}: score answered a counter named {taken[0]!r}, a column "
            f"the runner writes itself (its own: {', '.join(sorted(RUNNER_COLUMNS))})",
            family=family,
        )


def encode_row(row: Row) -> str:
    """The row's line in ``ticks.jsonl`` (keys sorted, no newline)."""
    return json.dumps(row, sort_keys=True)


class TickRows(Sequence[Row]):
    """The rows of one run, in tick order; each read decodes a fresh dict.

    Args:
        sink: A text file each row's line goes to as it is appended (flushed at once),
            or None to keep the rows in memory only.
    """

    def __init__(self, sink: TextIO | None = None) -> None:
        self._lines: list[str] = []
        self._sink = sink

    def append(self, row: Row) -> None:
        """Add the next tick's row (and write it, if there is a file)."""
        line = encode_row(row)
        self._lines.append(line)
        if self._sink is not None:
            self._sink.write(line + "\n")
            self._sink.flush()

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        if isinstance(index, slice):
            return [json.loads(line) for line in self._lines[index]]
        row: Row = json.loads(self._lines[index])
        return row

    def __iter__(self) -> Iterator[Row]:
        for line in self._lines:
            yield json.loads(line)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TickRows):
            return self._lines == other._lines
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"TickRows({len(self)} rows)"
