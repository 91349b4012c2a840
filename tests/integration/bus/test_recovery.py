"""What a restarted bus reads to come back: the snapshot decoded once, the log after it, no
collection meanwhile; and snapshots due by the log's size, so that log stays bounded."""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hivemem.memory_bus import journal as journal_module
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.server_process import ServerProcess

from .conftest import DIM, make_server

BATCHES = 6


def _written(data_dir: Path) -> bytes:
    """Write ``BATCHES`` batches with a snapshot after the third; the store's state."""
    server, tokens = make_server(
        register=False, journal=Journal(data_dir, "no"), snapshot_every=3, fork_snapshots=False
    )
    rng = np.random.default_rng(5)
    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        for b in range(BATCHES - 1):  # the snapshot after the third; two in the log
            vectors = rng.standard_normal((8, DIM)).astype(np.float32)
            alice.write_many(
                "private", [("alice", NewItem(f"fact {b}.{i}", vector=v)) for i, v in enumerate(vectors)], now=float(b)
            )  # fmt: skip
        state: bytes = msgpack.packb(server.inspect(MemoryStore.get_state))
    assert server.snapshots == 1
    return state


def test_a_restart_decodes_the_snapshot_once_and_replays_the_log_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _written(tmp_path)
    decoded: list[str] = []
    real_load = journal_module.decode_record

    def counting_load(payload: Any, path: Path, offset: int = 0) -> Any:
        decoded.append(path.name)
        return real_load(payload, path, offset)

    monkeypatch.setattr(journal_module, "decode_record", counting_load)
    again, _ = make_server(journal=Journal(tmp_path, "no"))
    with again:
        assert msgpack.packb(again.inspect(MemoryStore.get_state)) == state
    # the snapshot once (it was read twice: once more only to learn its sequence number)
    assert decoded.count("snapshot.msgpack") == 1
    assert decoded.count("journal.log") == 2


def test_a_restart_says_what_it_recovered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _written(tmp_path)
    again, _ = make_server(journal=Journal(tmp_path, "no"))
    with caplog.at_level(logging.INFO, logger="hivemem.memory_bus.recovery"), again:
        pass
    (message,) = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    # three batches of eight in the snapshot, two in the log after it
    assert message.startswith(f"recovered {8 * (BATCHES - 1)} items: a snapshot in ")
    assert " 2 journal records (" in message


def test_a_restart_holds_the_collector_off_while_it_recovers(tmp_path: Path) -> None:
    _written(tmp_path)
    collections: list[int] = []
    recovering = False

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and recovering:
            collections.append(info["generation"])

    again, _ = make_server(journal=Journal(tmp_path, "no"))
    durability = again._durability
    real_recover = durability.recover

    def recover() -> None:
        nonlocal recovering
        recovering = True
        try:
            real_recover()
        finally:
            recovering = False

    durability.recover = recover  # type: ignore[method-assign]
    threshold = gc.get_threshold()
    gc.set_threshold(1)  # a collection at every allocation, unless held off
    gc.callbacks.append(on_gc)
    try:
        again._recover()
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*threshold)
        assert again.journal is not None
        again.journal.close()
    assert collections == []
    assert gc.isenabled()
    assert again.store.stats()["private"]["items"] == 8 * (BATCHES - 1)


def _write_batches(server: BusServer, token: str, batches: int) -> list[tuple[int, int, int]]:
    """Write ``batches`` 16-item batches as alice; after each, the log since the last
    snapshot (records, bytes) and that snapshot's size, as the owner thread sees them."""
    seen = []
    journal = server.journal
    assert journal is not None
    rng = np.random.default_rng(9)
    with MemoryClient(server.address, "alice", token) as alice:
        for b in range(batches):
            vectors = rng.standard_normal((16, DIM)).astype(np.float32)
            alice.write_many(
                "private", [("alice", NewItem(f"fact {b}.{i}", vector=v)) for i, v in enumerate(vectors)], now=float(b)
            )  # fmt: skip
            seen.append(
                server.inspect(
                    lambda _: (
                        journal.records_since_snapshot,
                        journal.bytes_since_snapshot,
                        journal.snapshot_bytes,
                    )
                )
            )
    return seen


def test_a_snapshot_comes_once_the_log_holds_as_many_bytes_as_the_last_one(tmp_path: Path) -> None:
    floor = 20_000  # bytes; a record here is about 2.5 kB
    server, tokens = make_server(
        register=False,
        journal=Journal(tmp_path, "no"),
        snapshot_every=10**9,
        snapshot_log_bytes=floor,
        fork_snapshots=False,
    )
    with server:
        seen = _write_batches(server, tokens["alice"], 60)
    record = seen[0][1]  # the log after the first record
    assert server.snapshots >= 2
    for records, logged, snapshot in seen:
        # never more than one record past what makes a snapshot due
        assert logged < max(floor, snapshot) + record
        assert (records == 0) == (logged == 0)
    # once the snapshot outgrew the floor, the log grew as large as the snapshot
    assert any(logged > floor + record for _, logged, _ in seen)
    again, _ = make_server(journal=Journal(tmp_path, "no"))
    with again:
        assert again.inspect(MemoryStore.stats)["private"]["items"] == 16 * 60


def test_without_a_size_rule_snapshots_come_by_records_alone(tmp_path: Path) -> None:
    server, tokens = make_server(
        register=False,
        journal=Journal(tmp_path, "no"),
        snapshot_every=10**9,
        snapshot_log_bytes=0,
        fork_snapshots=False,
    )
    with server:
        seen = _write_batches(server, tokens["alice"], 30)
    assert server.snapshots == 0
    assert seen[-1][0] == 30 and seen[-1][1] == (tmp_path / "journal.log").stat().st_size


@pytest.mark.parametrize("value", [-1, 1.5, True, "64"])
def test_a_bad_snapshot_size_is_refused(value: object) -> None:
    with pytest.raises(InvalidInputError, match="snapshot_log_bytes"):
        make_server(snapshot_log_bytes=value)


def test_hivemem_bus_serve_snapshots_by_log_size(tmp_path: Path) -> None:
    """``--snapshot-log-mb`` reaches the server: 1 MiB of log makes the first snapshot."""
    server = ServerProcess(tmp_path / "data", snapshot_every=10**6, snapshot_log_mb=1)
    server.start()
    try:
        with server.admin() as admin:
            token = admin.register("writer")["token"]
        rng = np.random.default_rng(3)
        with MemoryClient(server.address, "writer", token, timeout=30) as writer:
            for b in range(16):  # 64 x 384-d: ~100 kB a record
                vectors = rng.standard_normal((64, 384)).astype(np.float32)
                writer.write_many(
                    "private", [("writer", NewItem(f"w {b}.{i}", vector=v)) for i, v in enumerate(vectors)], now=0.0
                )  # fmt: skip
        deadline = time.monotonic() + 30
        while not (tmp_path / "data" / "snapshot.msgpack").exists():
            assert time.monotonic() < deadline, "no snapshot after 1.6 MB of log"
            time.sleep(0.05)
    finally:
        server.stop()


def test_a_refused_request_draws_no_id_a_restart_would_give_again(tmp_path: Path) -> None:
    """A refusal is taken out of the log, so a replay never draws what it drew: an edge
    refused for its meta (after its id was drawn) shifted every later id by one, and
    an acknowledged id named another item after a restart."""
    server, tokens = make_server(journal=Journal(tmp_path, "no"), fork_snapshots=False)
    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        a, b = (alice.write("graph", "team", NewItem(t), now=1.0).item_id for t in "ab")
        with pytest.raises(InvalidInputError, match="meta"):
            alice.add_edge("team", a, b, "rel", now=2.0, meta={"x": float("inf")})
        with pytest.raises(InvalidInputError):
            alice.write("graph", "team", NewItem("too high", level=9), now=2.0)
        edge = alice.add_edge("team", a, b, "rel", now=3.0)
        c = alice.write("graph", "team", NewItem("c"), now=4.0).item_id
    again, tokens = make_server(journal=Journal(tmp_path, "no"))
    with again, MemoryClient(again.address, "alice", tokens["alice"]) as alice:
        assert [e["id"] for e in alice.edges("team")] == [edge]
        assert alice.get("graph", "team", c).text == "c"
        assert alice.write("graph", "team", NewItem("d"), now=5.0).item_id > c


def test_a_log_replayed_under_another_dimension_is_refused_not_dropped(tmp_path: Path) -> None:
    """With no ``store_config.json`` to compare (a directory from before it was kept, or
    one set aside as damaged), every write replayed into a store of another dimension
    was refused, and the bus started empty; its next snapshot made the loss final."""
    from hivemem.memory_bus.config import StoreConfig
    from hivemem.memory_bus.errors import ConfigError, HivememError

    server, tokens = make_server(register=False, journal=Journal(tmp_path, "no"))
    rng = np.random.default_rng(1)
    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        ids = [alice.write("private", "alice", NewItem(f"f{i}", vector=rng.standard_normal(DIM).astype(np.float32)), now=0.0).item_id for i in range(3)]  # fmt: skip
    (tmp_path / "store_config.json").unlink()
    other = BusServer(MemoryStore(StoreConfig(dim=DIM * 2)), journal=Journal(tmp_path, "no"))
    with pytest.raises(HivememError, match=f"dimension {DIM}; this bus has dim {DIM * 2}") as info:
        other.start()
    assert isinstance(info.value.__cause__, ConfigError)
    other.stop()
    again, tokens = make_server(register=False, journal=Journal(tmp_path, "no"))
    with again, MemoryClient(again.address, "alice", tokens["alice"]) as alice:
        assert [it.id for it in alice.scan("private", "alice").items] == ids
