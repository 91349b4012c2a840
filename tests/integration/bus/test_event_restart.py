"""A subscriber whose bus restarts on the same request port but another event port is
told of the gap and hears the new bus (real servers, real sockets; from an audit of the
clients)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hivemem.memory_bus import async_client
from hivemem.memory_bus.auth import new_secret
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.testing.server_process import free_port

from .conftest import make_server


def test_a_bus_restarted_on_another_event_port_is_followed_with_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The event address was resolved once: the stream waited at the old port, silent
    for ever, and told of no gap."""
    monkeypatch.setattr(async_client, "RECHECK_S", 0.3)  # asks the bus after 0.3 s quiet
    port, secret = free_port(), new_secret()

    def start() -> BusServer:
        server, _ = make_server(port=port, secret=secret)  # pub_port=0: any free one
        return server.start()

    server = start()
    seen: list[dict[str, Any]] = []
    heard = threading.Condition()

    def restart_told() -> bool:
        return any(e["kind"] == "gap" and e["missed"] is None for e in seen)

    with MemoryClient(server.address, "alice", server.token("alice"), timeout=5.0) as client:

        def follow() -> None:
            for event in client.events(["private/alice"], timeout=20):
                with heard:
                    told = restart_told()
                    seen.append(event)
                    heard.notify_all()
                if told and event["kind"] == "add":
                    return  # heard at the new address

        reader = threading.Thread(target=follow)
        reader.start()
        try:
            while not seen:  # written until subscribed
                client.write("private", "alice", NewItem("before"), now=0.0)
                with heard:
                    heard.wait_for(lambda: bool(seen), timeout=1)
            old_pub = server.pub_address
            server.stop()
            server = start()
            assert server.pub_address != old_pub
            with heard:
                assert heard.wait_for(restart_told, timeout=20)
            while reader.is_alive():  # written until heard at the new address
                client.write("private", "alice", NewItem("after"), now=1.0)
                reader.join(timeout=0.5)
        finally:
            server.stop()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert seen[-1]["kind"] == "add"
