"""A run's rows as JSON lines: read back equal, and in the file the moment they are added."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hivemem.platform.ticks import TickRows


def row(t: int) -> dict[str, object]:
    return {
        "t": t,
        "score": t / 7,
        "writes": 3 * t,
        "ops": {"private.ADD": float(t), "shared.NOOP": 1.0},
        "items": {"private": t, "graph": 0},
    }


def test_rows_read_back_equal_to_what_was_appended() -> None:
    rows = TickRows()
    for t in range(5):
        rows.append(row(t))
    assert len(rows) == 5
    assert list(rows) == [row(t) for t in range(5)]
    assert rows[-1] == row(4) and rows[1:3] == [row(1), row(2)]
    assert rows == [row(t) for t in range(5)] and rows != [row(t) for t in range(4)]
    other = TickRows()
    for t in range(5):
        other.append(row(t))
    assert rows == other
    other.append(row(5))
    assert rows != other


def test_a_read_is_a_fresh_dict() -> None:
    rows = TickRows()
    rows.append(row(1))
    rows[0]["ops"]["private.ADD"] = 99.0
    assert rows[0] == row(1)


def test_each_row_is_in_the_file_before_the_next_tick(tmp_path: Path) -> None:
    path = tmp_path / "ticks.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        rows = TickRows(fh)
        for t in range(4):
            rows.append(row(t))
            # read through another file object while this one is still open
            lines = path.read_text(encoding="utf-8").splitlines()
            assert [json.loads(line) for line in lines] == [row(i) for i in range(t + 1)]


def test_a_row_that_json_cannot_hold_is_refused_and_not_kept() -> None:
    rows = TickRows()
    with pytest.raises(TypeError):
        rows.append({"t": 0, "bad": object()})
    assert len(rows) == 0
