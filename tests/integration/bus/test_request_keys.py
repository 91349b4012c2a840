"""A request key used again for another request is refused, never answered with the reply
remembered under it (live, after a restart from the log, and from a snapshot)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import RequestIdReusedError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, Bus, make_server, send_once

SECRET = b"k" * 32


def _write(server: BusServer, text: str, req_id: int = 1, client: int = 7) -> list[bytes]:
    """Request ``req_id`` of ``client``: alice writes ``text`` to her private namespace."""
    args = {"tier": "private", "namespace": "alice", "item": {"text": text}, "now": 0.0}
    return encode_request(req_id, client, "write", "alice", server.token("alice"), args)


def _texts(server: BusServer) -> list[str]:
    with MemoryClient(server.address, "alice", server.token("alice"), timeout=5.0) as alice:
        return sorted(item.text for item in alice.scan("private", "alice").items)


@contextmanager
def _journaled(data: Path, **kw: Any) -> Iterator[BusServer]:
    store = MemoryStore(StoreConfig(dim=DIM, shared=TierConfig(capacity=1000)))
    server = BusServer(store, secret=SECRET, journal=Journal(data, "no"), **kw)
    server.register("alice", ["team"])
    with server:
        yield server


def test_two_writers_of_one_client_id_are_told_not_answered_from_memory() -> None:
    """Before: worker B's write was acknowledged ``ADD 1`` (worker A's reply) and never
    applied; only A's text was stored."""
    server, tokens = make_server()
    with server:
        bus = Bus(server, tokens)
        with bus.client("alice", client_id=7) as a, bus.client("alice", client_id=7) as b:
            first = a.write("private", "alice", NewItem("from worker A"), now=0.0)
            with pytest.raises(RequestIdReusedError) as info:
                b.write("private", "alice", NewItem("from worker B"), now=1.0)
            assert info.value.details == {"client": 7, "request_id": 1, "agent": "alice"}
            assert [i.text for i in a.scan("private", "alice").items] == ["from worker A"]
            # B's next id is free: it is applied, and A's reply is still A's
            assert b.write("private", "alice", NewItem("B again"), now=2.0).item_id != first.item_id
        # A retry (the same frames again) is still answered from memory, and applies nothing.
        frames = _write(server, "x", req_id=5, client=8)
        once = send_once(server.address, frames)
        assert once.ok and send_once(server.address, frames) == once
        assert _texts(server) == ["B again", "from worker A", "x"]


@pytest.mark.parametrize("snapshot", [False, True], ids=["from-the-log", "from-a-snapshot"])
def test_the_check_survives_a_restart(tmp_path: Path, snapshot: bool) -> None:
    every = 1 if snapshot else 10**9
    with _journaled(tmp_path, snapshot_every=every, fork_snapshots=False) as server:
        applied = send_once(server.address, _write(server, "A"))
        assert applied.ok
    if snapshot:
        assert server.snapshots >= 1
    with _journaled(tmp_path) as server:
        assert (
            send_once(server.address, _write(server, "A")) == applied
        )  # a retry across the restart
        refused = send_once(server.address, _write(server, "B"))
        assert not refused.ok and refused.error is not None
        assert refused.error["code"] == "request_id_reused"
        assert _texts(server) == ["A"]


@pytest.mark.parametrize("snapshot", [False, True], ids=["log-record", "snapshot"])
def test_replies_kept_before_fingerprints_are_answered_as_before(
    tmp_path: Path, snapshot: bool
) -> None:
    """A journal record or snapshot from a bus that kept no fingerprints still loads, and
    its replies answer any request under their keys (there is nothing to compare)."""
    if snapshot:
        with _journaled(tmp_path, snapshot_every=1, fork_snapshots=False) as server:
            applied = send_once(server.address, _write(server, "A"))
        journal = Journal(tmp_path, "no")
        state = journal.load_snapshot()
        assert state is not None and state.pop("dedup_fingerprints")
        journal.snapshot(state)  # as an older bus wrote it
        journal.close()
    else:
        with _journaled(tmp_path):
            pass  # the data directory, and alice's registration
        journal = Journal(tmp_path, "no")
        assert len(list(journal.replay())) == 1  # alice's registration; on from its seq
        args = {"tier": "private", "namespace": "alice", "item": {"text": "A"}, "now": 0.0}
        journal.append({"op": "write", "agent": "alice", "client": 7, "id": 1, "args": args})
        journal.close()
    with _journaled(tmp_path) as server:
        again = send_once(server.address, _write(server, "B"))
        assert again.ok and again.result["op"] == "ADD"
        if snapshot:
            assert again == applied
        assert _texts(server) == ["A"]
