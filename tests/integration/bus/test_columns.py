"""``write_many`` in columns: the same store as rows, clear errors, nothing half-written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hivemem.memory_bus.batch import NewRows
from hivemem.memory_bus.client import MemoryClient, OnBehalf, encode_write_entries
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import ProtocolError, decode_reply, encode_request
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, Bus, make_server


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def entries() -> list[tuple[str, NewItem]]:
    """Rows with every optional field used somewhere, over two namespaces."""
    return [
        (
            "team" if i % 3 else "alice",
            NewItem(
                f"fact {i} about door {i % 4}",
                vector=vec(i),
                meta={"n": i, "tags": ["a", "b"]},
                importance=float(i % 5),
                valid_from=None if i % 2 else float(i),
                valid_to=float("inf") if i % 4 else 100.0 + i,
            ),
        )
        for i in range(40)
    ]


def send(sock: zmq.Socket[bytes], token: str, args: dict[str, Any], req_id: int = 1) -> Any:
    sock.send_multipart(encode_request(req_id, 99, "write_many", "alice", token, args))
    return decode_reply(sock.recv_multipart())


def test_columns_and_rows_build_the_same_store(bus: Bus) -> None:
    rows_server, tokens = make_server()
    columns = encode_write_entries(entries())
    rows = [{"namespace": ns, "item": item} for ns, item in _row_form(entries())]
    assert isinstance(columns, dict) and set(columns) >= {"vector", "meta", "valid_to"}
    with rows_server, MemoryClient(rows_server.address, "alice", tokens["alice"]) as by_rows:
        with bus.client("alice") as by_columns:
            for tier in ("shared", "private"):
                wanted = [e for e in entries() if (e[0] == "alice") == (tier == "private")]
                got_c = by_columns.write_many(tier, wanted, now=5.0)
                got_r = by_rows.write_many_encoded(
                    tier,
                    [r for r in rows if (r["namespace"] == "alice") == (tier == "private")],
                    now=5.0,
                )
                assert got_c == got_r and len(got_c) == len(wanted)
            for client in (by_columns, by_rows):
                hits = client.search("shared", "team", vec(7), k=1, now=6.0)
                assert hits[0].item.text == "fact 7 about door 3" and hits[0].item.meta["n"] == 7
        state = [msgpack.packb(s.store.get_state()) for s in (bus.server, rows_server)]
    assert state[0] == state[1]


def _row_form(rows: list[tuple[str, NewItem]]) -> list[tuple[str, dict[str, Any]]]:
    from hivemem.memory_bus.codec import encode_new_item

    return [(ns, encode_new_item(item)) for ns, item in rows]


def test_an_empty_batch_writes_nothing(bus: Bus, alice: MemoryClient) -> None:
    assert alice.write_many("shared", [], now=0.0) == []
    assert bus.server.inspect(MemoryStore.stats)["shared"]["items"] == 0


def test_rows_on_behalf_of_other_agents_are_checked_each(bus: Bus) -> None:
    with bus.client("alice") as alice:
        mine = [("alice", NewItem("a", vector=vec(1)), OnBehalf("alice", bus.tokens["alice"]))]
        bobs = [("bob", NewItem("b", vector=vec(2)), OnBehalf("bob", bus.tokens["bob"]))]
        results = alice.write_many("private", mine + bobs, now=0.0)
        assert [r.item_id > 0 for r in results] == [True, True]
        with pytest.raises(AccessDeniedError):  # alice's row into bob's space
            alice.write_many("private", [("bob", NewItem("x", vector=vec(3)), mine[0][2])], now=0.0)
        with pytest.raises(ProtocolError, match="token"):
            alice.write_many(
                "private",
                [("bob", NewItem("x", vector=vec(3)), OnBehalf("bob", "forged"))],
                now=0.0,
            )
    assert bus.server.inspect(MemoryStore.stats)["private"]["items"] == 2


BAD_COLUMNS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown column": ({"text": ["a"], "namespace": "team", "vectors": b""}, "unknown column"),
    "text not a list": ({"text": "a", "namespace": "team"}, "text"),
    "vector blob of the wrong size": (
        {"text": ["a", "b"], "namespace": "team", "vector": b"\0" * 12},
        "vector",
    ),
    "wrong dimension": (
        {"text": ["a"], "namespace": "team", "vector": vec(1)[:-1].tobytes()},
        "dimension|dim",
    ),
    "NaN in a vector": (
        {"text": ["a"], "namespace": "team", "vector": np.full(DIM, np.nan, np.float32).tobytes()},
        "NaN|finite",
    ),
    "meta shorter than the rows": (
        {
            "text": ["a", "b"],
            "namespace": "team",
            "vector": np.stack([vec(1), vec(2)]).tobytes(),
            "meta": [{}],
        },
        "meta",
    ),
    "a bad meta value in row 1": (
        {
            "text": ["a", "b"],
            "namespace": "team",
            "vector": np.stack([vec(1), vec(2)]).tobytes(),
            "meta": [{}, {"x": float("nan")}],
        },
        "meta",
    ),
    "importance as a str": (
        {"text": ["a"], "namespace": "team", "vector": vec(1).tobytes(), "importance": ["hi"]},
        "importance",
    ),
    "validity that ends before it starts": (
        {
            "text": ["a"],
            "namespace": "team",
            "vector": vec(1).tobytes(),
            "valid_from": [5.0],
            "valid_to": [1.0],
        },
        "valid_to",
    ),
    "agents without tokens": (
        {"text": ["a"], "namespace": "team", "vector": vec(1).tobytes(), "agent": ["alice"]},
        "agent",
    ),
    "a namespace list of the wrong length": (
        {"text": ["a", "b"], "namespace": ["team"], "vector": np.stack([vec(1), vec(2)]).tobytes()},
        "namespace",
    ),
    "another group's namespace in the last row": (
        {
            "text": ["a", "b"],
            "namespace": ["team", "rivals"],
            "vector": np.stack([vec(1), vec(2)]).tobytes(),
        },
        "denied|may not",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_COLUMNS))
def test_bad_columns_get_a_clear_error_and_change_nothing(
    bus: Bus, dealer: zmq.Socket[bytes], case: str
) -> None:
    columns, expected = BAD_COLUMNS[case]
    token = bus.tokens["alice"]
    before = msgpack.packb(bus.server.inspect(MemoryStore.get_state))
    reply = send(dealer, token, {"tier": "shared", "now": 0.0, "columns": columns})
    assert not reply.ok and reply.error is not None
    assert re.search(expected, str(reply.error), flags=re.IGNORECASE), reply.error
    assert msgpack.packb(bus.server.inspect(MemoryStore.get_state)) == before
    good = {"text": ["fine"], "namespace": "team", "vector": vec(9).tobytes()}
    after = send(dealer, token, {"tier": "shared", "now": 0.0, "columns": good}, req_id=2)
    assert after.ok and len(after.result["ops"]) == 1


def test_columnar_writes_survive_a_restart(tmp_path: Path) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        results = alice.write_many("shared", [e for e in entries() if e[0] == "team"], now=1.0)
    state = msgpack.packb(server.inspect(MemoryStore.get_state))
    again, _ = make_server(journal=Journal(tmp_path, "always"))
    with again:
        assert msgpack.packb(again.store.get_state()) == state  # every field of every item
        assert again.store.stats()["shared"]["items"] == len(results) > 0


@pytest.mark.parametrize("fork", [False, True])
def test_a_snapshot_holds_the_batches_stored_after_their_reply(tmp_path: Path, fork: bool) -> None:
    """A snapshot after every record drops the log it holds each time: it must be taken
    once the batch's rows (stored after the reply) are in, or they are lost on restart.
    Forked, a snapshot starts only when the one before has ended (the records in between
    stay in the log)."""
    server, tokens = make_server(
        journal=Journal(tmp_path, "no"), snapshot_every=1, fork_snapshots=fork
    )
    rows = [e for e in entries() if e[0] == "team"]
    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        for now in range(3):
            alice.write_many("shared", rows, now=float(now))
        state = msgpack.packb(server.inspect(MemoryStore.get_state))
    assert server.snapshots >= 1 and (tmp_path / "snapshot.msgpack").exists()
    journal = Journal(tmp_path, "no")
    snapshot = journal.load_snapshot()
    assert snapshot is not None
    team = snapshot["store"]["tiers"]["shared"]["namespaces"]["team"]
    columns = [NewRows.from_state(batch, "team") for batch in team["pending"]]
    held = (len(team["items"]) + sum(len(batch.ids) for batch in columns)) // len(rows)
    left = list(journal.replay())
    journal.close()
    # Every batch exactly once: in the snapshot, or in the log after it.
    assert held + len(left) == 3 and held >= 1
    assert fork or held == 3
    again, _ = make_server(journal=Journal(tmp_path, "no"))
    with again:
        assert again.inspect(MemoryStore.stats)["shared"]["items"] == 3 * len(rows)
        assert msgpack.packb(again.inspect(MemoryStore.get_state)) == state
