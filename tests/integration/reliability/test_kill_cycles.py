"""Three SIGKILLs of a standalone bus server under load from four writers: every
acknowledged write is in the data directory exactly once (the long run:
``benchmarks/kill_cycles.py``)."""

from __future__ import annotations

from pathlib import Path

from hivemem.memory_bus.testing.kill_cycles import kill_cycles


def test_every_acknowledged_write_survives_three_kills_exactly_once(tmp_path: Path) -> None:
    report = kill_cycles(tmp_path, cycles=3, writers=4, snapshot_every=300)
    assert report.acked > 300 * 3, "too little load to mean anything"
    assert min(report.acked_per_cycle) > 0, "a cycle wrote nothing before its kill"
    assert report.gave_up == 0
    assert report.retried >= 1, "no write was in flight across a kill"
    assert report.missing == 0, report.to_json()
    assert report.duplicates == 0, report.to_json()
    # writes are retried until acknowledged, so nothing is held that was not acknowledged
    assert report.unacked_present == 0, report.to_json()
