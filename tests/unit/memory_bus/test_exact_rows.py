"""ExactRows against a plain list model: every append, growth and removal keeps the rows."""

from __future__ import annotations

import threading
from itertools import pairwise

import numpy as np
import pytest
from hivemem.memory_bus.config import IndexConfig, Prefault
from hivemem.memory_bus.exact_rows import RESERVE_FROM, SMALL_GROWTH, ExactRows
from hivemem.memory_bus.pages import PREFAULTER, idle_prefaulter, prefault_while_idle
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

DIM = 64  # 4,096 rows make 1 MiB: large parts get a mapping of their own (pages.py)

# An op: ("append", n rows) | ("one", 0) | ("drop", position among the rows held).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 700)),
        st.tuples(st.just("one"), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 10_000)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops, st.sampled_from([None, 1_500, 100_000]), st.sampled_from(list(Prefault)))
@example([("append", 700)] * 10 + [("drop", 3), ("one", 0)], None, Prefault.OFF)  # own mapping
@example([("append", 700)] * 10 + [("drop", 3), ("one", 0)], 100_000, Prefault.THREAD)
def test_rows_match_a_list_model_through_growth_and_removal(
    steps: list[tuple[str, int]], ceiling: int | None, prefault: Prefault
) -> None:
    rows = ExactRows(DIM, prefault=prefault, ceiling=lambda: ceiling)
    model: list[tuple[int, np.ndarray]] = []
    next_id = 1
    for op, arg in steps:
        if op == "append":
            ids = np.arange(next_id, next_id + arg, dtype=np.int64)
            vecs = np.random.default_rng(next_id).standard_normal((arg, DIM)).astype(np.float32)
            rows.append(ids, vecs)
            model += zip(ids.tolist(), vecs, strict=True)
            next_id += arg
        elif op == "one":
            vec = np.full(DIM, float(next_id), dtype=np.float32)
            rows.append_one(next_id, vec)
            model.append((next_id, vec))
            next_id += 1
        elif model:
            row = arg % len(model)
            moved = rows.move_last_to(row)
            last = model.pop()
            if row < len(model):
                model[row] = last
                assert moved == last[0]
            else:
                assert moved is None
        assert rows.n == len(model) <= rows.capacity
    assert rows.ids.tolist() == [item_id for item_id, _ in model]
    expected = np.array([v for _, v in model], dtype=np.float32).reshape(-1, DIM)
    np.testing.assert_array_equal(rows.vecs, expected)
    ids, vecs = rows.copies()
    assert ids.tolist() == rows.ids.tolist() and np.array_equal(vecs, expected)
    rows.clear()
    assert rows.n == 0 and rows.capacity == 0 and rows.matrix is None


def test_a_small_part_grows_by_the_small_factor_and_a_large_one_takes_its_room() -> None:
    rows = ExactRows(DIM, ceiling=lambda: 5_000)
    vec = np.zeros(DIM, dtype=np.float32)
    capacities = []
    for item_id in range(1, RESERVE_FROM + 2):
        before = rows.capacity
        rows.append_one(item_id, vec)
        if rows.capacity != before:
            capacities.append(rows.capacity)
    small = [c for c in capacities if c <= RESERVE_FROM]
    assert all(b == a * SMALL_GROWTH for a, b in pairwise(small))
    assert capacities[-1] == 5_000  # past RESERVE_FROM rows: room for the ceiling at once


def grow_past_a_mapping(rows: ExactRows, n: int = 6_000) -> None:
    """Append ``n`` rows 64 at a time: past 4,096 rows the part has a mapping of its own."""
    vecs = np.ones((64, DIM), dtype=np.float32)
    for start in range(0, n, 64):
        rows.append(np.arange(start, start + 64, dtype=np.int64), vecs)


def test_idle_prefaults_wait_for_the_thread_that_asked_and_are_done_in_chunks() -> None:
    if not PREFAULTER.enabled:
        pytest.skip("no madvise(MADV_POPULATE_WRITE) here (Linux 5.14+)")
    seen: dict[str, object] = {}

    def owner() -> None:
        work = idle_prefaulter()
        rows = ExactRows(DIM, prefault=Prefault.IDLE, ceiling=lambda: 50_000)
        before = PREFAULTER.populated
        grow_past_a_mapping(rows)
        seen["asked ahead"] = rows.faulted > rows.n
        seen["populated before idle"] = PREFAULTER.populated - before
        chunks = 0
        while work(16 << 10):
            chunks += 1
        seen["chunks"] = chunks
        seen["populated"] = PREFAULTER.populated - before
        np.testing.assert_array_equal(rows.vecs, np.ones((rows.n, DIM), dtype=np.float32))

    thread = threading.Thread(target=owner)
    thread.start()
    thread.join()
    assert seen["asked ahead"] is True
    assert seen["populated before idle"] == 0  # nothing done until the thread was idle
    assert isinstance(seen["chunks"], int) and seen["chunks"] > 1
    assert isinstance(seen["populated"], int) and seen["populated"] >= 16 << 10


def test_a_thread_that_never_idles_keeps_no_idle_prefaults() -> None:
    # This thread never called idle_prefaulter(): its writes fault their own pages, and
    # no queue holds on to the matrix.
    rows = ExactRows(DIM, prefault=Prefault.IDLE, ceiling=lambda: 50_000)
    grow_past_a_mapping(rows)
    assert rows.matrix is not None
    assert prefault_while_idle(1 << 20) is False


@pytest.mark.parametrize(
    ("given", "mode"),
    [(True, Prefault.THREAD), (False, Prefault.OFF), ("idle", Prefault.IDLE), (None, None)],
)
def test_prefault_takes_a_mode_or_the_booleans_of_older_files(given: object, mode: object) -> None:
    if mode is None:
        with pytest.raises(ValidationError, match="prefault"):
            IndexConfig(prefault=given)
    else:
        assert IndexConfig(prefault=given).prefault is mode
    assert IndexConfig().prefault is Prefault.IDLE
