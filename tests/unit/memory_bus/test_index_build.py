"""Builds on the builder thread: the index serves every row meanwhile, and loses none."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from hivemem.memory_bus.config import IndexBuild, IndexConfig, IndexKind
from hivemem.memory_bus.index import VectorIndex
from hivemem.memory_bus.testing.builds import builder_held

DIM = 16
# efSearch past the set size: HNSW visits every node, so its results are exact here.
BACKGROUND = IndexConfig(
    kind=IndexKind.AUTO, approx_threshold=1_200, build_batch=1_100, hnsw_ef_search=4_096
)


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def held() -> Iterator[threading.Event]:
    with builder_held() as gate:
        yield gate


def assert_exact(index: VectorIndex, model: dict[int, np.ndarray], queries: np.ndarray) -> None:
    """Every query's best 10 are the brute-force best 10 of the live rows."""
    ids = np.array(sorted(model), dtype=np.int64)
    data = np.stack([model[i] for i in ids.tolist()])
    scores = queries @ data.T
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :10]
    got_scores, got = index.search(queries, 10)
    np.testing.assert_array_equal(got, ids[order])
    np.testing.assert_allclose(got_scores, np.take_along_axis(scores, order, axis=1), atol=1e-5)
    assert len(index) == len(model)


def fill(index: VectorIndex, model: dict[int, np.ndarray], start: int, n: int, seed: int) -> None:
    vecs = unit(n, seed)
    ids = np.arange(start, start + n, dtype=np.int64)
    index.add_checked(ids, vecs)
    model.update(zip(ids.tolist(), vecs, strict=True))


def test_writes_and_searches_go_on_while_the_structure_is_built(held: threading.Event) -> None:
    index, model = VectorIndex(DIM, BACKGROUND), {}
    fill(index, model, 0, 1_200, 1)  # crosses approx_threshold: the build is queued
    assert index.building and index.kind == "flat"
    assert_exact(index, model, unit(20, 2))
    fill(index, model, 1_200, 300, 3)  # written while the build waits
    assert index.building
    assert_exact(index, model, unit(20, 4))
    held.set()
    index.finish_build()
    assert not index.building and index.kind == "hnsw"
    assert index._exact.n == 300  # only the rows written during the build are still exact
    assert_exact(index, model, unit(20, 5))


def test_a_search_installs_a_finished_build() -> None:
    index, model = VectorIndex(DIM, BACKGROUND), {}
    fill(index, model, 0, 1_200, 1)
    index._build.wait()  # type: ignore[union-attr]
    assert index.building  # done, but nothing has looked since
    assert_exact(index, model, unit(5, 2))
    assert not index.building and index.kind == "hnsw"


def test_a_full_backlog_makes_the_writer_wait_for_the_build(held: threading.Event) -> None:
    index, model = VectorIndex(DIM, BACKGROUND.model_copy(update={"max_backlog": 200})), {}
    fill(index, model, 0, 1_200, 1)
    fill(index, model, 1_200, 150, 2)
    assert index.building
    threading.Timer(0.2, held.set).start()
    fill(index, model, 1_350, 100, 3)  # 250 rows besides the build's: waits for it
    assert not index.building and index.kind == "hnsw" and index._exact.n == 250
    assert_exact(index, model, unit(20, 4))


def test_rows_removed_or_replaced_during_a_merge_are_not_brought_back() -> None:
    index, model = VectorIndex(DIM, BACKGROUND), {}
    fill(index, model, 0, 1_200, 1)
    index.finish_build()
    replaced = unit(1, 9)
    with builder_held():
        fill(index, model, 1_200, 1_100, 2)  # build_batch rows: a merge is queued
        assert index.building
        gone = list(range(0, 1_200, 40)) + list(range(1_200, 2_300, 37))  # old and merging
        assert index.remove_ids(gone) == len(gone)
        for item_id in gone:
            del model[item_id]
        index.remove_ids([1_201])  # an update: the same id, a new vector
        index.add_checked(np.array([1_201]), replaced)
        model[1_201] = replaced[0]
        assert_exact(index, model, unit(20, 3))
    index.finish_build()
    assert index.kind == "hnsw" and index._exact.n == 1  # the replaced row stays exact
    assert_exact(index, model, unit(20, 4))
    _, found = index.search(unit(2, 2)[1:], 3)  # the old vector of 1,201
    assert 1_201 not in found[0].tolist()  # is a tombstone
    np.testing.assert_array_equal(index.vectors_of([1_201]), replaced)


def test_a_tombstone_rebuild_serves_from_the_old_structure_meanwhile() -> None:
    index, model = VectorIndex(DIM, BACKGROUND), {}
    fill(index, model, 0, 2_000, 1)
    index.finish_build()
    with builder_held():
        first = list(range(0, 600))  # over a quarter tombstoned: a rebuild is queued
        index.remove_ids(first)
        rebuild = index._build
        assert rebuild is not None and rebuild.fresh
        later = list(range(600, 610))
        index.remove_ids(later)
        assert index._build is rebuild  # one rebuild, not one per removal
        for item_id in first + later:
            del model[item_id]
        assert_exact(index, model, unit(20, 2))
    index.finish_build()
    assert len(index._labels) == 1_400 and int(np.count_nonzero(index._dead)) == 10
    assert_exact(index, model, unit(20, 3))


def test_a_state_saved_during_a_build_starts_it_again(held: threading.Event) -> None:
    index, model = VectorIndex(DIM, BACKGROUND), {}
    fill(index, model, 0, 1_300, 1)
    clone = VectorIndex.from_state(index.to_state(), BACKGROUND)
    assert clone.building and clone.kind == "flat"
    assert_exact(clone, model, unit(20, 2))
    held.set()
    clone.finish_build()
    assert clone.kind == "hnsw"
    assert_exact(clone, model, unit(20, 3))


def test_inline_builds_happen_in_the_write_that_crosses_the_threshold() -> None:
    config = BACKGROUND.model_copy(update={"build": IndexBuild.INLINE})
    index, model = VectorIndex(DIM, config), {}
    fill(index, model, 0, 1_200, 1)
    assert not index.building and index.kind == "hnsw" and index._exact.n == 0
    fill(index, model, 1_200, 1_100, 2)
    assert not index.building and index._exact.n == 0  # merged in the write
    assert_exact(index, model, unit(20, 3))


def test_a_failed_build_leaves_every_row_exact_and_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: VectorIndex, train: np.ndarray) -> None:
        raise MemoryError("no room for the graph")

    monkeypatch.setattr(VectorIndex, "_new_structure", broken)
    index, model = VectorIndex(DIM, BACKGROUND), {}
    fill(index, model, 0, 1_200, 1)
    with caplog.at_level(logging.ERROR):
        index.finish_build()
    assert "building the approximate index failed" in caplog.text
    assert index.kind == "flat" and not index.building
    assert_exact(index, model, unit(20, 2))
    with builder_held():
        fill(index, model, 1_200, 10, 3)
        assert index.building  # the next write past the threshold tries again
        monkeypatch.undo()  # and this time it works
    index.finish_build()
    assert index.kind == "hnsw"
    assert_exact(index, model, unit(20, 5))
