"""A request handed to a stopped server (a LocalTransport call that passed its serving
check just before stop()) is refused, not applied against a closed journal."""

from __future__ import annotations

from pathlib import Path

from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import decode_reply, encode_request

from .conftest import make_server


def test_handle_after_stop_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "no"))
    args = {"tier": "private", "namespace": "alice", "item": {"text": "late"}, "now": 0.0}
    frames = encode_request(1, 5, "write", "alice", tokens["alice"], args)
    with server:
        pass
    log = tmp_path / "journal.log"
    before = log.read_bytes()
    reply = decode_reply([frames[0], server.handle(frames)])
    assert not reply.ok and reply.error is not None
    assert "has stopped" in reply.error["message"]
    assert log.read_bytes() == before
    assert server.inspect(lambda store: store.private.namespaces.get("alice")) is None
