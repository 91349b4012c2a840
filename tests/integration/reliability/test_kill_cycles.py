"""Three SIGKILLs of a standalone bus server under load from four writers: every
acknowledged write is in the data directory exactly once (the long run:
``benchmarks/kill_cycles.py``)."""

from __future__ import annotations

from pathlib import Path

from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.codec import encode_new_item
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import HEADER, decode_reply, encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.kill_cycles import kill_cycles


def test_every_acknowledged_write_survives_three_kills_exactly_once(tmp_path: Path) -> None:
    # The server busy-polls (--spin-us): acknowledging sooner must not acknowledge less.
    report = kill_cycles(tmp_path, cycles=3, writers=4, snapshot_every=300, spin_us=200)
    assert report.acked > 300 * 3, "too little load to mean anything"
    assert min(report.acked_per_cycle) > 0, "a cycle wrote nothing before its kill"
    assert report.gave_up == 0
    assert report.retried >= 1, "no write was in flight across a kill"
    assert report.missing == 0, report.to_json()
    assert report.duplicates == 0, report.to_json()
    # writes are retried until acknowledged, so nothing is held that was not acknowledged
    assert report.unacked_present == 0, report.to_json()


def test_writes_a_dedup_policy_decided_survive_two_kills_exactly_once(tmp_path: Path) -> None:
    """Every write's decision is journaled after it (a ``decided`` record) and played
    back on the restart; a kill may land between the two records. Under ``fsync always``
    the bus commits in groups: both records of every write in a group are appended, the
    writes applied, and one fsync precedes every reply of the group."""
    config = tmp_path / "dedup.yaml"
    config.write_text("private: {write_policy: dedup}\n")
    report = kill_cycles(tmp_path, cycles=2, writers=4, snapshot_every=300, config=config, vectors=384, fsync="always")  # fmt: skip
    assert report.acked > 300 * 2, "too little load to mean anything"
    assert report.missing == 0, report.to_json()
    assert report.duplicates == 0, report.to_json()
    assert report.unacked_present == 0, report.to_json()


def test_a_retry_of_the_write_that_triggered_a_snapshot_is_not_applied_twice(
    tmp_path: Path,
) -> None:
    """The kill cycles found this: the snapshot a write triggers must hold that write's
    reply, since it empties the log; a retry after a crash was applied a second time."""
    store_config = StoreConfig(dim=8)
    frames = encode_request(
        7,
        4242,
        "write",
        "w0",
        token_for(b"s" * 32, "w0"),
        {"tier": "private", "namespace": "w0", "item": encode_new_item(NewItem("once")), "now": 0},
    )

    def serve_once() -> tuple[object, int]:
        journal = Journal(tmp_path, "no")
        with BusServer(
            MemoryStore(store_config), secret=b"s" * 32, journal=journal, snapshot_every=1
        ) as server:
            reply = server.handle(frames)
            return decode_reply([HEADER, reply]), server.store.stats()["private"]["items"]

    first, items = serve_once()
    assert (tmp_path / "snapshot.msgpack").exists() and items == 1
    again, items = serve_once()  # restarted from the snapshot alone
    assert again == first
    assert items == 1
