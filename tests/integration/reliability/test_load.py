"""64 concurrent clients for 5 seconds against a standalone bus: no errors, and every
acknowledged write in the data directory exactly once (speed is measured, not asserted,
by ``benchmarks/bus_load.py``)."""

from __future__ import annotations

from pathlib import Path

from hivemem.memory_bus.testing.load import load_test


def test_64_clients_get_no_errors_and_lose_no_write(tmp_path: Path) -> None:
    result = load_test(tmp_path, clients=64, seconds=5.0, baseline_seconds=1.0)
    load = result.load
    assert load.clients == 64
    assert load.errors == {}, load.errors
    assert result.baseline.errors == {}
    assert len(load.acked) > 64, "too little load to mean anything"
    assert load.latency_ms["search"]["count"] > 64
    # every client was served, not only a few fast ones
    assert len({key.split(":")[0] for key in load.acked}) == 64
    assert result.missing == 0
    assert result.duplicates == 0
