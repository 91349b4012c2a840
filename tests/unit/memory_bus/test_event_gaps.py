"""What a subscriber missed, from event numbers and the bus's marks."""

from __future__ import annotations

from typing import Any

import pytest
from hivemem.memory_bus.event_gaps import EventGaps, starts
from hivemem.memory_bus.protocol import GAP, MARK


def event(seq: Any, namespace: str = "team") -> dict[str, Any]:
    return {"kind": "add", "tier": "shared", "namespace": namespace, "item_id": 7, "seq": seq}


def mark(seq: int, namespace: str = "team") -> dict[str, Any]:
    return {"kind": MARK, "tier": "shared", "namespace": namespace, "seq": seq}


def gap(seq: int | None, missed: int | None, namespace: str = "team") -> dict[str, Any]:
    return {"kind": GAP, "tier": "shared", "namespace": namespace, "seq": seq, "missed": missed}


def test_numbers_in_a_row_show_no_gap_and_skipped_ones_show_how_many() -> None:
    gaps = EventGaps()
    assert gaps.gap_before(event(5)) is None  # a namespace's first record: it starts there
    assert gaps.gap_before(event(6)) is None
    assert gaps.gap_before(event(9)) == gap(7, 2)
    assert gaps.gap_before(event(10)) is None


def test_a_subscription_counts_on_from_where_subscribe_said_it_stood() -> None:
    gaps = EventGaps(starts(["shared/team", "shared/", "private/alice"], [4, None, 0]))
    assert gaps.gap_before(event(7)) == gap(5, 2)  # 5 and 6 came before the SUB was ready
    assert gaps.gap_before({**event(1), "tier": "private", "namespace": "alice"}) is None


def test_a_mark_is_the_last_number_so_it_shows_events_missed_at_the_end() -> None:
    gaps = EventGaps({("shared", "team"): 3})
    assert gaps.gap_before(mark(3)) is None
    assert gaps.gap_before(event(4)) is None
    assert gaps.gap_before(mark(6)) == gap(5, 2)
    assert gaps.gap_before(mark(6)) is None  # told once
    assert gaps.gap_before(event(7)) is None


@pytest.mark.parametrize("record", [event(2), event(3), mark(2)])
def test_numbers_that_go_back_are_a_restart_of_unknown_size(record: dict[str, Any]) -> None:
    gaps = EventGaps({("shared", "team"): 3})
    assert gaps.gap_before(record) == gap(None, None)
    assert gaps.gap_before(event(record["seq"] + 1)) is None  # counting on from there


def test_namespaces_are_counted_apart_and_unnumbered_records_passed_over() -> None:
    gaps = EventGaps({("shared", "team"): 1, ("shared", "other"): 10})
    assert gaps.gap_before(event(2)) is None
    assert gaps.gap_before(event(11, "other")) is None
    assert gaps.gap_before(event(13, "other")) == gap(12, 1, "other")
    for unnumbered in (None, 0, True, "3"):
        assert gaps.gap_before(event(unnumbered)) is None
    assert gaps.gap_before(event(3)) is None


def test_an_answer_without_numbers_starts_every_namespace_unknown() -> None:
    assert starts(["shared/team"], None) == {}
    assert starts(["shared/team", "shared/x"], [1]) == {}  # not one per topic
    assert starts(["shared/team"], [True]) == {}


def test_a_mark_of_another_epoch_restarts_every_namespace_whatever_its_numbers() -> None:
    """The bus lost its memory and then made more events than were seen: the numbers
    alone would show an ordinary gap of 5 (the mark's 9 after 3)."""
    gaps = EventGaps({("shared", "team"): 3, ("shared", "other"): 8}, epoch="a")
    assert gaps.gaps_before({**mark(3), "epoch": "a"}) == []
    assert gaps.gaps_before({**mark(9), "epoch": "b"}) == [gap(None, None, "other"), gap(None, None)]  # fmt: skip
    assert gaps.gaps_before(event(10)) == []  # counting on from the mark
    assert gaps.gaps_before(event(1, "other")) == []  # and afresh where it knows nothing
    assert gaps.gaps_before(event(12)) == [gap(11, 1)]


def test_the_first_epoch_is_learned_not_a_restart() -> None:
    gaps = EventGaps({("shared", "team"): 3})  # subscribed to a bus that sent no epoch
    assert gaps.gaps_before({**mark(3), "epoch": "a"}) == []
    assert gaps.epoch == "a"
    assert gaps.gaps_before({**mark(5), "epoch": "a"}) == [gap(4, 2)]


def test_a_restart_told_by_numbers_going_back_is_not_told_again_by_the_new_epoch() -> None:
    """A watcher of a bus restarted without a data directory saw two gaps for one restart:
    one when the numbers went back, one at the new epoch's first mark."""
    gaps = EventGaps({("shared", "team"): 0, ("shared", "other"): 4}, epoch="a")
    assert gaps.gaps_before(event(1)) == []
    assert gaps.gaps_before(event(1)) == [gap(None, None)]  # the bus restarted
    assert gaps.gaps_before(event(2)) == []
    assert gaps.gaps_before({**mark(2), "epoch": "b"}) == [gap(None, None, "other")]
    assert gaps.gaps_before(event(3)) == []
    assert gaps.gaps_before({**mark(5), "epoch": "b"}) == [gap(4, 2)]  # counted on as before
