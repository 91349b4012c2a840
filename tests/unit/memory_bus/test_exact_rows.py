"""ExactRows against a plain list model: every append, growth and removal keeps the rows."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hivemem.memory_bus.exact_rows import RESERVE_FROM, SMALL_GROWTH, ExactRows
from hypothesis import example, given, settings
from hypothesis import strategies as st

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
@given(ops, st.sampled_from([None, 1_500, 100_000]), st.booleans())
@example([("append", 700)] * 10 + [("drop", 3), ("one", 0)], None, False)  # an own mapping
@example([("append", 700)] * 10 + [("drop", 3), ("one", 0)], 100_000, True)
def test_rows_match_a_list_model_through_growth_and_removal(
    steps: list[tuple[str, int]], ceiling: int | None, prefault: bool
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
