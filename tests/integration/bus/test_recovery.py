"""What a restarted bus does to come back: each file decoded once, no collection meanwhile."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hivemem.memory_bus import journal as journal_module
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, make_server

BATCHES = 6


def _written(data_dir: Path) -> bytes:
    """Write ``BATCHES`` batches with a snapshot after the third; the store's state."""
    server, tokens = make_server(
        journal=Journal(data_dir, "no"), snapshot_every=3, fork_snapshots=False
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
    real_load = journal_module._load

    def counting_load(payload: Any, path: Path) -> Any:
        decoded.append(path.name)
        return real_load(payload, path)

    monkeypatch.setattr(journal_module, "_load", counting_load)
    again, _ = make_server(journal=Journal(tmp_path, "no"))
    with again:
        assert msgpack.packb(again.inspect(MemoryStore.get_state)) == state
    # the snapshot once (it was read twice: once more only to learn its sequence number)
    assert decoded.count("snapshot.msgpack") == 1
    assert decoded.count("journal.log") == 2


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
