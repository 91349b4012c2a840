"""The server's /metrics over real HTTP."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import HEADER, decode_reply, encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.testing.server_process import free_port

from .conftest import DIM, Bus, make_server


def test_metrics_exposition(bus: Bus, alice: MemoryClient) -> None:
    port = free_port()
    bus.server.metrics.serve(port)
    for i in range(3):
        alice.write("shared", "team", NewItem(f"m{i}"), now=0.0)
    with pytest.raises(AccessDeniedError):
        alice.write("shared", "elsewhere", NewItem("refused"), now=0.0)
    # gauges refresh on the owner thread once a second, or up to every 5 s where a
    # refresh is slow (a loaded machine): wait for the one after the writes
    deadline, text = time.monotonic() + 20, ""
    while 'hivemem_bus_items{tier="shared"} 3.0' not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
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


def busy_seconds(server: BusServer) -> float:
    """hivemem_bus_busy_seconds_total once every request answered so far is settled."""
    server.inspect(lambda store: None)  # the owner thread adds a request's time holding it
    value = server.metrics.registry.get_sample_value("hivemem_bus_busy_seconds_total")
    assert value is not None
    return value


def latency_sum(server: BusServer) -> float:
    """The request-duration histogram's sum over every op."""
    return sum(
        sample.value
        for family in server.metrics.registry.collect()
        if family.name == "hivemem_bus_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_sum")
    )


def busy_and_latency(server: BusServer) -> tuple[float, float]:
    """Both sums read together between two requests: a request counted in one is in both."""

    def read(store: object) -> tuple[float, float]:
        busy = server.metrics.registry.get_sample_value("hivemem_bus_busy_seconds_total")
        return float(busy or 0.0), latency_sum(server)

    return server.inspect(read)


@pytest.mark.parametrize("spin_us", [0, 2_000])
def test_busy_seconds_are_the_time_spent_answering_and_not_idle_time(spin_us: int) -> None:
    """hivemem_bus_busy_seconds_total grows by at least the requests' own durations (the
    latency histogram's sum) and by at most the wall time the client spent on them; with
    no request it stands still, also while a busy-polling server spins."""
    server, tokens = make_server(spin_us=spin_us)
    vector = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as client:
        client.ping()
        busy, latency = busy_and_latency(server)
        started = time.perf_counter()
        for i in range(20):
            entries = [("team", NewItem(f"fact {i}.{j}", vector=vector)) for j in range(64)]
            client.write_many("shared", entries, now=0.0)
        busy_after, latency_after = busy_and_latency(server)
        waited = time.perf_counter() - started
        assert latency_after - latency <= busy_after - busy <= waited
        time.sleep(0.3)  # nothing asked: nothing counted (a spinning server spins idle)
        assert busy_seconds(server) == busy_after


def test_requests_answered_through_handle_count_as_busy() -> None:
    """A request handled in the caller's thread (an in-process transport) holds the store
    as the owner thread does, and its time is counted too."""
    server, tokens = make_server()
    with server:
        busy = busy_seconds(server)
        reply = decode_reply(
            [HEADER, server.handle(encode_request(1, 7, "ping", "alice", tokens["alice"], {}))]
        )
        assert reply.ok, reply.error
        assert busy_seconds(server) > busy


DURABILITY = (
    "hivemem_bus_journal_bytes",
    "hivemem_bus_snapshot_bytes",
    "hivemem_bus_snapshots_total",
    "hivemem_bus_snapshot_failures_total",
    "hivemem_bus_recovery_seconds",
)


def test_durability_is_exported_as_the_journal_has_it(tmp_path: Path) -> None:
    """Over HTTP: the log since the last snapshot, that snapshot's size, the snapshots
    taken and the last recovery's time, as the journal and server have them."""
    port = free_port()
    server, tokens = make_server(
        register=False, journal=Journal(tmp_path, "no"), snapshot_every=4, fork_snapshots=False
    )
    rng = np.random.default_rng(4)

    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        found = {}
        for line in text.decode().splitlines():
            name, _, value = line.partition(" ")
            if name in DURABILITY:
                found[name] = float(value)
        return found

    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        server.metrics.serve(port)
        for b in range(6):  # a snapshot after the fourth record, two records after it
            vectors = rng.standard_normal((8, DIM)).astype(np.float32)
            alice.write_many(
                "private", [("alice", NewItem(f"f{b}.{i}", vector=v)) for i, v in enumerate(vectors)], now=0.0
            )  # fmt: skip
        journal = server.journal
        assert journal is not None
        logged, snapshot = server.inspect(
            lambda _: (journal.bytes_since_snapshot, journal.snapshot_bytes)
        )
        seen = scrape()
    assert logged == (tmp_path / "journal.log").stat().st_size > 0
    assert snapshot == (tmp_path / "snapshot.msgpack").stat().st_size > 0
    assert seen == {
        "hivemem_bus_journal_bytes": logged,
        "hivemem_bus_snapshot_bytes": snapshot,
        "hivemem_bus_snapshots_total": 1.0,
        "hivemem_bus_snapshot_failures_total": 0.0,
        "hivemem_bus_recovery_seconds": seen["hivemem_bus_recovery_seconds"],
    }
    assert seen["hivemem_bus_recovery_seconds"] < 5.0
    again, _ = make_server(register=False, journal=Journal(tmp_path, "no"))
    started = time.monotonic()
    with again:
        took = time.monotonic() - started
        values = again.metrics.registry.get_sample_value
        assert values("hivemem_bus_journal_bytes") == logged  # the log it replayed
        assert values("hivemem_bus_snapshots_total") == 0.0  # none by this server
        assert 0.0 < values("hivemem_bus_recovery_seconds") <= took  # type: ignore[operator]


def test_a_snapshot_that_fails_is_counted_and_the_bus_serves_on(tmp_path: Path) -> None:
    """The snapshot's file cannot be made (a directory stands where it goes): the failure
    is counted for an alert, and writes are acknowledged and kept all the same."""
    server, tokens = make_server(
        register=False, journal=Journal(tmp_path, "no"), snapshot_every=2, fork_snapshots=False
    )
    with server, MemoryClient(server.address, "alice", tokens["alice"]) as alice:
        (tmp_path / f"snapshot.{os.getpid()}.tmp").mkdir()  # where the snapshot is written
        ids = [alice.write("private", "alice", NewItem(f"f{i}"), now=0.0).item_id for i in range(3)]
        values = server.metrics.registry.get_sample_value
        failed = server.inspect(lambda _: values("hivemem_bus_snapshot_failures_total"))
        # due after record 2, failed; the next try comes 2 records later, after the last
        assert failed == 1.0 and values("hivemem_bus_snapshots_total") == 0.0
        assert list(tmp_path.glob("journal.*.log"))  # the log kept what it was to hold
    (tmp_path / f"snapshot.{os.getpid()}.tmp").rmdir()
    again, tokens = make_server(journal=Journal(tmp_path, "no"))  # a new secret
    with again, MemoryClient(again.address, "alice", tokens["alice"]) as alice:
        assert [alice.get("private", "alice", i).text for i in ids] == [f"f{i}" for i in range(3)]


def test_a_server_without_a_data_directory_exports_no_durability() -> None:
    server, _ = make_server()
    with server:
        for name in DURABILITY:
            assert server.metrics.registry.get_sample_value(name) is None


def test_evictions_made_at_once_in_process_are_counted_under_their_policy() -> None:
    """Before the owner thread's first gauge refresh, evictions were labelled "unknown":
    the in-process path answers as soon as start() returns. A window is labelled by the
    policy that evicts there, FIFO, not the one it names."""
    from hivemem.memory_bus.config import NamespaceMode, StoreConfig, TierConfig
    from hivemem.memory_bus.store import MemoryStore

    config = StoreConfig(
        dim=DIM,
        shared=TierConfig(capacity=2, eviction="lfu"),
        private=TierConfig(capacity=2, mode=NamespaceMode.WINDOW, eviction="lru"),
    )
    server = BusServer(MemoryStore(config))
    token = server.register("alice", ["team"])
    with server:
        for n, (tier, namespace) in enumerate((("shared", "team"), ("private", "alice"))):
            for i in range(5):
                args = {"tier": tier, "namespace": namespace, "item": {"text": f"m{i}"}, "now": float(i)}  # fmt: skip
                reply = decode_reply([HEADER, server.handle(encode_request(10 * n + i + 1, 1, "write", "alice", token, args))])  # fmt: skip
                assert reply.ok, reply.error
        sample = server.metrics.registry.get_sample_value
        assert sample("hivemem_bus_evictions_total", {"tier": "shared", "policy": "lfu"}) == 3
        assert sample("hivemem_bus_evictions_total", {"tier": "private", "policy": "fifo"}) == 3
        assert (
            sample("hivemem_bus_evictions_total", {"tier": "shared", "policy": "unknown"}) is None
        )
        assert server.store.stats()["private"]["eviction_policy"] == "fifo"
