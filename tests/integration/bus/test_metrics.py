"""The server's /metrics over real HTTP."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.item import NewItem

from .conftest import Bus, make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_exposition(bus: Bus, alice: MemoryClient) -> None:
    port = free_port()
    bus.server.metrics.serve(port)
    for i in range(3):
        alice.write("shared", "team", NewItem(f"m{i}"), now=0.0)
    with pytest.raises(AccessDeniedError):
        alice.write("shared", "elsewhere", NewItem("refused"), now=0.0)
    time.sleep(1.2)  # gauges refresh once a second on the owner thread
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'hivemem_bus_requests_total{code="ok",op="write"} 3.0' in text
    assert 'hivemem_bus_requests_total{code="access_denied",op="write"} 1.0' in text
    assert 'hivemem_bus_items{tier="shared"} 3.0' in text
    assert 'hivemem_bus_events_total{kind="add",tier="shared"} 3.0' in text
    assert "hivemem_bus_request_duration_seconds_bucket" in text
    assert "hivemem_bus_connected_clients 1.0" in text  # the alice client
    assert 'hivemem_bus_item_bytes{tier="shared"}' in text
    assert "agent" not in text.replace("hivemem", "")  # no agent ids as labels


def test_gauges_are_refreshed_less_often_when_a_refresh_is_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refresh of 50 ms may come every 5 s at most (1 % of the owner thread), not every
    second: over 2.5 s, the first refresh and the last word at stop, nothing between."""
    server, _tokens = make_server()
    calls: list[float] = []
    stats = server.store.stats

    def slow_stats() -> dict[str, Any]:
        calls.append(time.monotonic())
        time.sleep(0.05)
        return stats()

    monkeypatch.setattr(server.store, "stats", slow_stats)
    with server:
        time.sleep(2.5)
    assert len(calls) == 2, calls
