"""A data directory holds no credential, and its writes do not depend on the secret.

Before, the journal kept each on-behalf row's token and a snapshot kept ``register``'s
replies (tokens) for retries; and a replay checked every row's token again, so a bus
restarted under a new secret (the way to revoke a leaked token) dropped the on-behalf
writes it had acknowledged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.ops import OnBehalf
from hivemem.memory_bus.protocol import decode_reply, encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 8
OLD, NEW = b"o" * 32, b"n" * 32


def bus(data_dir: Path, secret: bytes, **kw: object) -> BusServer:
    journal = Journal(data_dir, "no")
    return BusServer(MemoryStore(StoreConfig(dim=DIM)), secret=secret, journal=journal, **kw)  # type: ignore[arg-type]


def vector(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    return v


def files_of(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.is_file())


@pytest.mark.parametrize("snapshot_every", [1, 100_000], ids=["snapshots", "log"])
@pytest.mark.parametrize("form", ["rows", "columns"])
def test_on_behalf_writes_survive_a_new_secret_and_leave_no_token_on_disk(
    tmp_path: Path, form: str, snapshot_every: int
) -> None:
    first = bus(tmp_path, OLD, snapshot_every=snapshot_every, fork_snapshots=False)
    alice, host_token = first.register("alice", ["team"]), first.register("host", ["team"])
    entries: list[tuple[object, ...]] = [
        ("team", NewItem(f"alice's fact {i}", vector=vector(i)), OnBehalf("alice", alice))
        for i in range(3)
    ]
    if form == "rows":  # an entry of the host's own: the batch goes as rows
        entries.append(("team", NewItem("the host's", vector=vector(5))))
    with first, MemoryClient(first.address, "host", host_token) as host:
        written = host.write_many("shared", entries, now=1.0)
        with MemoryClient(first.address, "__admin__", first.admin_token) as admin:
            registered = admin.register("bob", ["team"])["token"]
    assert len(written) == len(entries)
    on_disk = files_of(tmp_path)
    for token in (alice, host_token, registered, first.admin_token):
        assert token.encode() not in on_disk
    assert b"alice's fact 2" in on_disk  # what was looked through holds the writes

    again = bus(tmp_path, NEW, fork_snapshots=False)
    with again, MemoryClient(again.address, "alice", again.token("alice")) as reader:
        texts = [reader.get("shared", "team", w.item_id).text for w in written]
    assert texts == [e[1].text for e in entries]  # type: ignore[attr-defined]


def test_a_row_with_a_wrong_token_is_refused_before_the_journal(tmp_path: Path) -> None:
    """A row with a wrong token refuses the whole batch and leaves no record (a guard:
    this held before too, as the refused record was taken back; that the check comes
    before the journal, which a replay trusting rows needs, is the forged-row test's)."""
    server = bus(tmp_path, OLD)
    alice, host_token = server.register("alice", ["team"]), server.register("host", ["team"])
    with server, MemoryClient(server.address, "host", host_token) as host:
        seq = server.inspect(lambda _: server.journal.seq)  # type: ignore[union-attr]
        for token in ("wrong", alice[:-1]):
            entries = [
                ("team", NewItem("fine", vector=vector(0)), OnBehalf("alice", alice)),
                ("team", NewItem("forged", vector=vector(1)), OnBehalf("alice", token)),
            ]
            with pytest.raises(HivememError, match="bad or missing token") as caught:
                host.write_many("shared", entries, now=1.0)
            assert caught.value.code == "unauthenticated"
        assert server.inspect(lambda _: server.journal.seq) == seq  # type: ignore[union-attr]
    assert b"forged" not in files_of(tmp_path)


def test_a_forged_row_never_reaches_the_journal_whose_replay_trusts_rows(
    tmp_path: Path,
) -> None:
    """A request refused after it was journaled has its record taken back; where that
    fails (a disk error), the record stays, and a replay, taking rows on trust, would
    apply a forged row. So rows are checked before the journal sees them."""
    server = bus(tmp_path, OLD)
    alice, host_token = server.register("alice", ["team"]), server.register("host", ["team"])
    assert server.journal is not None
    server.journal.retract = lambda seq: False  # type: ignore[method-assign]
    with server, MemoryClient(server.address, "host", host_token) as host:
        forged = [("team", NewItem("forged", vector=vector(1)), OnBehalf("alice", "0" * 64))]
        with pytest.raises(HivememError, match="bad or missing token"):
            host.write_many("shared", forged, now=1.0)
        host.write("shared", "team", NewItem("the host's", vector=vector(2)), now=2.0)
    again = bus(tmp_path, OLD)
    with again, MemoryClient(again.address, "alice", alice) as reader:
        texts = [item.text for item in reader.scan("shared", "team").items]
    assert texts == ["the host's"]


def test_a_retried_register_gets_its_token_made_again_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """The retry memory keeps ``register``'s reply without its token (kept replies go
    into snapshots); a resend of the same request is answered from it, with the token
    made again, and is not applied again: a registration made in between stays."""
    server = bus(tmp_path, OLD)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    with server, ctx, sock:
        sock.connect(server.address)

        def register(req_id: int, groups: list[str]) -> dict[str, object]:
            args = {"agent_id": "carol", "groups": groups, "role": "agent"}
            sock.send_multipart(encode_request(req_id, 7, "register", "__admin__", server.admin_token, args))  # fmt: skip
            return decode_reply(sock.recv_multipart()).result  # type: ignore[no-any-return]

        assert register(1, ["team"]) == {"token": server.token("carol")}
        kept = server.inspect(lambda _: server._dispatch.replies.get((7, 1, "__admin__")))
        assert kept is not None and server.token("carol").encode() not in kept
        assert register(2, ["quarantine"]) == {"token": server.token("carol")}
        assert register(1, ["team"]) == {"token": server.token("carol")}  # the resend
        assert server.inspect(lambda _: server.registry.agents["carol"].groups) == {"quarantine"}


def test_a_data_directory_and_its_files_are_its_owners_alone(tmp_path: Path) -> None:
    """Under an open umask too, and a directory made before (by hand, or an older
    hivemem) is closed when a bus opens it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "journal.log").touch(mode=0o644)
    umask = os.umask(0o002)
    try:
        server = bus(data_dir, OLD, snapshot_every=1, fork_snapshots=False)
        alice = server.register("alice", ["team"])
        with server, MemoryClient(server.address, "alice", alice) as client:
            client.write("private", "alice", NewItem("a secret", vector=vector(1)), now=1.0)
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir()}
    assert {"journal.log", "snapshot.msgpack", "store_config.json", "epoch"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
