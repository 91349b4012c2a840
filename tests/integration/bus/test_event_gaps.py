"""Numbered events through a real server: a subscriber learns which events it missed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.arguments import split_topic
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.event_gaps import EventGaps
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import (
    ADMIN_AGENT,
    GAP,
    MARK,
    encode_subscription,
    unpack,
    wire_topic,
)
from hivemem.memory_bus.publisher import MARK_PERIOD_S, MARKS_PER_MESSAGE
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

from .conftest import make_server, subscribed, wait_subscribed

QUIET_S = 0.7


def _server(**kw: Any) -> tuple[BusServer, dict[str, str]]:
    store = MemoryStore(StoreConfig(dim=8, shared=TierConfig(capacity=4)))
    server = BusServer(store, **kw)
    return server, {agent: server.register(agent, ["team"]) for agent in ("alice", "bob")}


async def _records(stream: Any, first: asyncio.Future[Any], quiet: float) -> list[dict[str, Any]]:
    """What ``stream`` yields, from ``first`` on, until nothing comes for ``quiet`` seconds."""
    got = [await asyncio.wait_for(first, 5)]
    try:
        while True:
            got.append(await asyncio.wait_for(stream.__anext__(), quiet))
    except TimeoutError:
        return got


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_events_are_numbered_per_namespace_and_subscribe_says_where_they_stand() -> None:
    server, tokens = _server()
    v = np.ones(8, np.float32)

    async def run() -> tuple[Any, list[dict[str, Any]]]:
        alice = AsyncMemoryClient(server.address, "alice", tokens["alice"], timeout=5.0)
        await alice.write_many("shared", [("team", NewItem(f"old {i}", vector=v)) for i in range(2)], now=0.0)  # fmt: skip
        granted = await alice.subscribe(["shared/team", "private/alice"])
        stream = alice.events(["shared/team", "private/alice"])
        first = asyncio.ensure_future(stream.__anext__())
        await subscribed(server, 2)  # before the writes
        results = await alice.write_many("shared", [("team", NewItem(f"w{i}", vector=v)) for i in range(3)], now=1.0)  # fmt: skip
        ids = [r.item_id for r in results]
        await alice.update("shared", "team", ids[0], expected_version=1, now=2.0, text="w0 again")
        await alice.delete("shared", "team", ids[1], now=3.0)
        await alice.write("private", "alice", NewItem("mine", vector=v), now=4.0)
        got = await _records(stream, first, QUIET_S)
        await stream.aclose()
        alice.close()
        return granted, got

    with server:
        granted, got = asyncio.run(run())
    assert granted["seqs"] == [2, 0]  # two events of team so far; alice's namespace has none
    team = [(e["kind"], e["seq"]) for e in got if e["namespace"] == "team"]
    # 3 adds, the third over the capacity of 4 (the oldest evicted after it), an update,
    # a delete: one number each
    assert team == [("add", 3), ("add", 4), ("add", 5), ("evict", 6), ("update", 7), ("delete", 8)]
    assert [(e["kind"], e["seq"]) for e in got if e["namespace"] == "alice"] == [("add", 1)]
    assert not [e for e in got if e["kind"] in (GAP, MARK)]  # nothing missed; marks not yielded


def test_graph_edges_are_announced_and_numbered_with_the_nodes() -> None:
    """Edges added (by ``add_edge`` and by ``promote``) and invalidated (by
    ``invalidate_edge``, or with a node deleted) are events of their graph namespace,
    numbered among its nodes' events, after the node's own."""
    server = BusServer(MemoryStore(StoreConfig(dim=8)))
    token = server.register("alice", ["team"])
    v = np.ones(8, np.float32)

    async def run() -> list[dict[str, Any]]:
        alice = AsyncMemoryClient(server.address, "alice", token, timeout=5.0)
        stream = alice.events(["graph/team"])
        first = asyncio.ensure_future(stream.__anext__())
        await subscribed(server, 1)
        a, b = [(await alice.write("graph", "team", NewItem(t, vector=v), now=1.0)).item_id for t in "ab"]  # fmt: skip
        edge = await alice.add_edge("team", a, b, "causes", now=2.0)
        await alice.invalidate_edge("team", edge, at=3.0)
        parent = await alice.promote("team", [a, b], NewItem("ab", vector=v, level=1), now=4.0)
        await alice.delete("graph", "team", a, now=5.0)  # ends parent->a; a->b has ended
        got = await _records(stream, first, QUIET_S)
        await stream.aclose()
        alice.close()
        return [a, b, edge, parent, got]

    with server:
        a, b, edge, parent, got = asyncio.run(run())
    assert [(e["kind"], e["seq"]) for e in got] == [
        ("add", 1), ("add", 2), ("edge", 3), ("invalidate", 4), ("add", 5), ("edge", 6), ("edge", 7),
        ("delete", 8), ("invalidate", 9),
    ]  # fmt: skip
    common = {"tier": "graph", "namespace": "team", "src": a, "dst": b, "type": "causes"}
    assert got[2] == {**common, "kind": "edge", "edge_id": edge, "valid_from": 2.0, "valid_to": float("inf"), "now": 2.0, "seq": 3}  # fmt: skip
    assert got[3] == {**common, "kind": "invalidate", "edge_id": edge, "valid_from": 2.0, "valid_to": 3.0, "now": 3.0, "seq": 4}  # fmt: skip
    assert [(e["src"], e["dst"], e["type"]) for e in got[5:7]] == [(parent, a, "abstracts"), (parent, b, "abstracts")]  # fmt: skip
    assert got[8] == {**got[5], "kind": "invalidate", "valid_to": 5.0, "now": 5.0, "seq": 9}


def test_a_whole_tier_gets_its_namespaces_marks_many_to_a_message() -> None:
    """2,500 namespaces changed: a subscriber of the tier gets every one's last number
    in messages of at most MARKS_PER_MESSAGE marks on the tier's topic, not 2,500
    messages; a subscriber of one namespace by name gets that one's alone."""
    server = BusServer(MemoryStore(StoreConfig(dim=8)))
    names = [f"g{i}" for i in range(2_500)]
    token = server.register("bob", ["g7"])
    writer = server.register("carl", names)
    ctx = zmq.Context()
    subs = {}
    with server:
        for topic, (agent, key) in {"shared/": (ADMIN_AGENT, server.admin_token), "shared/g7": ("bob", token)}.items():  # fmt: skip
            sub = subs[topic] = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, encode_subscription(agent, key, topic))
            sub.setsockopt(zmq.SUBSCRIBE, wire_topic(*split_topic(topic)))
            sub.connect(server.pub_address)
        wait_subscribed(server, 2)
        with MemoryClient(server.address, "carl", writer, timeout=10.0) as carl:
            v = np.ones(8, np.float32)
            carl.write_many("shared", [(name, NewItem(name, vector=v)) for name in names], now=0.0)
        time.sleep(MARK_PERIOD_S * 1.5)  # one round of marks, at least
        got = {}
        for topic, sub in subs.items():
            got[topic] = []
            while sub.poll(200):
                frames = sub.recv_multipart()
                got[topic].append((frames[0], unpack(frames[2])))
            sub.close()
    ctx.term()
    tier_marks = [(t, records) for t, records in got["shared/"] if records[0]["kind"] == MARK and t == b"shared/"]  # fmt: skip
    assert len(tier_marks) >= 3 and all(len(r) <= MARKS_PER_MESSAGE for _, r in tier_marks)
    marked = {(m["namespace"], m["seq"]) for _, records in tier_marks for m in records}
    assert marked == {(name, 1) for name in names}
    bobs = [records for _, records in got["shared/g7"]]
    assert bobs[0] == [{"kind": "add", "tier": "shared", "namespace": "g7", "item_id": 8, "version": 1, "now": 0.0, "seq": 1}]  # fmt: skip
    assert all(r == [{"kind": MARK, "tier": "shared", "namespace": "g7", "seq": 1, "epoch": server.epoch}] for r in bobs[1:])  # fmt: skip
    assert len(bobs) > 1


@pytest.mark.parametrize("topic", ["shared/team", "shared/", ""])
def test_a_slow_subscriber_learns_how_many_events_it_missed_even_at_the_end(topic: str) -> None:
    """The bus queues one message per subscriber, the subscriber one: while it does not
    read, the writes' events overflow and ZeroMQ drops the newest. The numbers of what
    it then receives, and the marks after the last write, account for every event:
    subscribed to the namespace by name (bob), or to its whole tier or everything (the
    admin, whose marks come many to a message, on the tier's topic)."""
    store = MemoryStore(StoreConfig(dim=8))
    server = BusServer(store, event_queue=1)
    token = server.register("bob", ["team"])
    agent, token = ("bob", token) if topic == "shared/team" else (ADMIN_AGENT, server.admin_token)
    ctx = zmq.Context()
    with server:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 1)
        sub.setsockopt(zmq.RCVBUF, 1 << 16)
        sub.setsockopt(zmq.SUBSCRIBE, encode_subscription(agent, token, topic))
        sub.setsockopt(zmq.SUBSCRIBE, wire_topic(*split_topic(topic)))
        sub.connect(server.pub_address)
        wait_subscribed(server, 1)  # before the writes
        with MemoryClient(server.address, "bob", server.token("bob"), timeout=10.0) as bob:
            vectors = np.ones((1000, 8), np.float32)
            for b in range(100):  # 100,000 events in 100 messages, while nobody reads
                bob.write_many("shared", [("team", NewItem("x", vector=x)) for x in vectors], now=float(b))  # fmt: skip
        gaps, events, missed, tail, settled = EventGaps({("shared", "team"): 0}), 0, 0, None, False
        last = 0  # the last event received
        while not settled and sub.poll(int((3 * MARK_PERIOD_S + 5) * 1000)):  # loaded machine
            for record in unpack(sub.recv_multipart()[2]):
                gap = gaps.gap_before(record)
                if gap is not None:
                    missed += gap["missed"]
                    tail = record["kind"]
                events += record["kind"] != MARK
                last = record["seq"] if record["kind"] != MARK else last
                # Only a mark of the last write's number has nothing more to tell: one
                # sent while the writes went on (a slow writer, a loaded machine) can
                # reach the socket before its queue fills, gapless, and more follow it.
                settled = record["kind"] == MARK and record["seq"] == 100_000
        sub.close()
    ctx.term()
    assert 0 < events < 100_000
    assert events + missed == 100_000
    if last < 100_000:  # the last events dropped (as nearly always): only a mark could tell
        assert tail == MARK


def test_events_made_before_a_subscription_reached_the_bus_show_as_a_gap() -> None:
    """``subscribe`` says where the namespace stood; events made after that and before
    the stream's SUB reaches the event socket never reach it. No later event comes to
    show them: the mark the bus sends a namespace's new subscriber at once does."""
    server, tokens = make_server()

    async def run() -> list[dict[str, Any]]:
        alice = AsyncMemoryClient(server.address, "alice", tokens["alice"], timeout=5.0)
        await alice.write("shared", "team", NewItem("seen by subscribe"), now=0.0)
        subscribe = alice.subscribe

        async def subscribe_then_write(topics: list[str]) -> Any:
            granted = await subscribe(topics)
            for i in range(5):  # before the stream's SUB exists
                await alice.write("shared", "team", NewItem(f"unseen {i}"), now=1.0)
            return granted

        alice.subscribe = subscribe_then_write  # type: ignore[method-assign]
        stream = alice.events(["shared/team"])
        got = await _records(stream, asyncio.ensure_future(stream.__anext__()), QUIET_S)
        await stream.aclose()
        alice.close()
        return got

    with server:
        got = asyncio.run(run())
    assert got == [{"kind": GAP, "tier": "shared", "namespace": "team", "seq": 2, "missed": 5}]


@pytest.mark.parametrize("snapshot_every", [1, 50_000], ids=["snapshot", "log"])
def test_the_numbers_go_on_across_a_restart_with_a_data_dir(
    tmp_path: Path, snapshot_every: int
) -> None:
    """A snapshot keeps the numbers and a replay makes the same events again, so the
    numbers after a restart follow on from those before it; subscribe says where, and
    that they are of the same epoch (the data directory's)."""
    epochs = []
    for round_ in range(2):
        server, tokens = make_server(
            journal=Journal(tmp_path, "no"), snapshot_every=snapshot_every, fork_snapshots=False
        )
        with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as alice:
            granted = alice.subscribe(["shared/team"])
            assert granted["seqs"] == [3 * round_]
            epochs.append(granted["epoch"])
            alice.write_many("shared", [("team", NewItem(f"{round_}.{i}")) for i in range(3)], now=0.0)  # fmt: skip
            assert alice.subscribe(["shared/team"])["seqs"] == [3 * round_ + 3]
    assert epochs[0] == epochs[1] == (tmp_path / "epoch").read_text().strip()


def _across_a_restart_without_memory(after: int) -> tuple[list[dict[str, Any]], list[str]]:
    """A subscriber sees three events of one bus; it stops, and a bus without its memory
    takes its ports (and secret, so the tokens still hold) and makes ``after`` events at
    once, then one more once the subscriber's SUB is back. What the subscriber got, up to
    that last one, and the two buses' epochs."""
    secret = b"s" * 32
    first, tokens = make_server(secret=secret)

    async def run() -> tuple[list[dict[str, Any]], str]:
        alice = AsyncMemoryClient(first.address, "alice", tokens["alice"], timeout=5.0)
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def pump() -> None:
            async for record in alice.events(["shared/team"]):
                await got.put(record)

        pumping = asyncio.ensure_future(pump())
        await subscribed(first, 1)
        for i in range(3):
            await alice.write("shared", "team", NewItem(f"before {i}"), now=0.0)
        seen = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
        first.stop()
        second, _ = make_server(secret=secret, port=_port(first.address), pub_port=_port(first.pub_address))  # fmt: skip
        with second:
            for i in range(after):
                await alice.write("shared", "team", NewItem(f"after {i}"), now=1.0)
            # the gap, shown by the new bus's first event or by the mark it sends on resubscribing
            seen.append(await asyncio.wait_for(got.get(), 10))
            await subscribed(second, 1)  # the SUB is back
            await alice.write("shared", "team", NewItem("after that"), now=2.0)
            while seen[-1]["kind"] == GAP or seen[-1].get("seq") != after + 1:
                seen.append(await asyncio.wait_for(got.get(), 5))
            pumping.cancel()  # closes the stream's socket, which alice.close() waits for
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
            alice.close()
        return seen, second.epoch

    first.start()
    seen, epoch = asyncio.run(run())
    return seen, [first.epoch, epoch]


RESTARTED = {"kind": GAP, "tier": "shared", "namespace": "team", "seq": None, "missed": None}


def test_a_bus_that_restarts_without_its_memory_shows_as_a_gap_of_unknown_size() -> None:
    """The numbers start again at 1, below the last one seen: the stream yields a gap
    with ``missed`` None before the new bus's events."""
    seen, _ = _across_a_restart_without_memory(after=1)
    assert [(e["kind"], e["seq"]) for e in seen[:3]] == [("add", 1), ("add", 2), ("add", 3)]
    assert seen[3] == RESTARTED
    # then the new bus's events, numbered from 1 (the first one lost if it came before
    # the SUB had resubscribed: the mark showed the restart then)
    assert [(e["kind"], e["seq"]) for e in seen[4:]] in ([("add", 1), ("add", 2)], [("add", 2)])


def test_a_bus_that_restarts_without_its_memory_and_gets_busier_shows_as_a_restart() -> None:
    """The new bus makes more events than the subscriber had seen before its SUB is
    back: the numbers alone would read as an ordinary gap (the first new one above the
    last one seen); the new epoch of its marks says the memory is gone."""
    seen, (old, new) = _across_a_restart_without_memory(after=8)
    assert old != new
    assert seen[3] == RESTARTED
    assert not [e for e in seen[4:] if e["kind"] == GAP and e["missed"] is not None]
    assert seen[-1]["seq"] == 9


@pytest.mark.parametrize("topic", ["shared/", ""])
def test_a_whole_tier_has_no_starting_number(topic: str) -> None:
    server, tokens = make_server()
    with server, MemoryClient(server.address, "__admin__", tokens["__admin__"]) as admin:
        assert admin.subscribe([topic])["seqs"] == [None]
