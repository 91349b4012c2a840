"""The event feed through a real server: subscribers get the events they may read, no others."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hivemem.memory_bus.auth import new_secret
from hivemem.memory_bus.client import AsyncMemoryClient, LocalTransport, MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import (
    ADMIN_AGENT,
    GAP,
    HEADER,
    MARK,
    MAX_SUBSCRIPTION_BYTES,
    encode_subscription,
    event_topic,
)
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.server_process import free_port

from .conftest import DIM, make_server, subscribed, wait_subscribed

QUIET_S = 0.7  # no event for this long: the stream has delivered all it will


async def drain(first: asyncio.Future[Any], stream: AsyncIterator[Any]) -> set[tuple[str, str]]:
    """(tier, namespace) of every event a stream delivers until it goes quiet."""
    got = set()
    try:
        event = await asyncio.wait_for(first, 5)
        while True:
            got.add((event["tier"], event["namespace"]))
            event = await asyncio.wait_for(stream.__anext__(), QUIET_S)
    except TimeoutError:
        return got


def raw_sub(ctx: zmq.Context[Any], address: str, *prefixes: bytes) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for prefix in prefixes:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(address)
    return sock


def received(sock: zmq.Socket[Any]) -> list[bytes]:
    """The topics of the event messages ``sock`` gets until it goes quiet (the marks the
    bus sends a subscribed namespace after its events are not counted: they are sent
    every second for a while; anything else is)."""
    topics = []
    while sock.poll(int(QUIET_S * 1000)):
        topic, _header, payload = sock.recv_multipart()
        if [record["kind"] for record in msgpack.unpackb(payload)] != [MARK]:
            topics.append(topic)
    return topics


def unsigned(caplog: pytest.LogCaptureFixture) -> list[bytes]:
    """The prefixes the server said were subscribed to without an agent's signature."""
    return [r.args[0] for r in caplog.records if "without an agent's signature" in r.msg]


def test_events_reach_only_those_who_may_read_them(caplog: pytest.LogCaptureFixture) -> None:
    server, tokens = make_server()
    tokens["carol"] = server.register("carol", ["team-b"])
    ctx = zmq.Context()
    with server:
        clients = {
            name: AsyncMemoryClient(server.address, name, tokens[name], timeout=5.0)
            for name in ("alice", "bob", "carol", ADMIN_AGENT)
        }

        def sub(*prefixes: bytes) -> zmq.Socket[Any]:
            return raw_sub(ctx, server.pub_address, *prefixes)

        bob_topic = event_topic("private", "bob")
        bare = sub(b"", b"private/")  # topics alone: no agent, no token
        forged = sub(  # bob's own token, asking for alice's namespace
            encode_subscription("bob", tokens["bob"], "private/alice"),
            event_topic("private", "alice"),
        )
        bad_token = sub(encode_subscription("bob", "0" * 64, "private/bob"), bob_topic)
        bobs_key = encode_subscription("bob", tokens["bob"], "private/bob")
        bobs = sub(bobs_key, bob_topic)

        def refused_so_far() -> Any:
            return server.inspect(
                lambda _: server.metrics.registry.get_sample_value(
                    "hivemem_bus_event_subscriptions_refused_total"
                )
            )

        # The raw sockets connect in the background. Their subscriptions must reach the
        # server before the admin's: a bare "" that comes after the admin subscribed to
        # "" is taken for the admin's own filter, and is not told (a loaded CI run saw it).
        deadline = time.monotonic() + 10
        while (refused_so_far() != 2 or not {b"", b"private/"} <= set(unsigned(caplog))) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)

        async def run() -> dict[str, set[tuple[str, str]]]:
            alice, bob, carol, admin = clients.values()
            # Refused topics are refused at once, with the error a read would get.
            with pytest.raises(AccessDeniedError):
                await bob.events(["private/alice"]).__anext__()
            with pytest.raises(AccessDeniedError):
                await alice.events(["shared/"]).__anext__()  # a whole tier: the admin's
            streams = {
                "alice": alice.events(["private/alice", "shared/team"]),
                "admin": admin.events([""]),
            }
            firsts = {name: asyncio.ensure_future(s.__anext__()) for name, s in streams.items()}
            await subscribed(server, 4)  # bob's raw key, alice's two topics, the admin's
            await alice.write("private", "alice", NewItem("mine"), now=0.0)
            await carol.write("shared", "team-b", NewItem("a prefix of team's name"), now=0.0)
            await alice.write("shared", "team", NewItem("the team's"), now=0.0)
            await bob.write("private", "bob", NewItem("bob's"), now=0.0)
            return {name: await drain(firsts[name], s) for name, s in streams.items()}

        try:
            got = asyncio.run(run())
            raw = {name: received(s) for name, s in
                   [("bare", bare), ("forged", forged), ("bad_token", bad_token), ("bobs", bobs)]}  # fmt: skip
            refused = refused_so_far()
        finally:
            for client in clients.values():
                client.close()
            for sock in (bare, forged, bad_token, bobs):
                sock.close(linger=0)
            ctx.term()
    assert got["alice"] == {("private", "alice"), ("shared", "team")}
    assert got["admin"] == {
        ("private", "alice"),
        ("shared", "team-b"),
        ("shared", "team"),
        ("private", "bob"),
    }
    # An agent's events come on its own signed subscription, which its SUB keeps as well.
    assert raw == {"bare": [], "forged": [], "bad_token": [], "bobs": [bobs_key]}
    assert refused == 2  # the forged and the bad-token subscriptions; bare ones are not signed
    # Bare subscriptions are told, once each (the refused subscribers' filters too); a
    # granted subscriber's own filter is not.
    told = unsigned(caplog)
    assert {b"", b"private/"} <= set(told) and len(told) == len(set(told))
    assert event_topic("shared", "team") not in told


def test_malformed_subscriptions_are_ignored_and_the_feed_keeps_working() -> None:
    rng = random.Random(7)
    server, tokens = make_server()
    ctx = zmq.Context()
    junk: list[bytes] = []
    for i in range(3000):
        body = rng.randbytes(rng.randrange(0, 200))
        kind = i % 4
        if kind == 0:
            junk.append(body)  # bare bytes: no signature at all
        elif kind == 1:
            junk.append(HEADER + body)  # signed-looking, undecodable
        elif kind == 2:  # decodable, wrong types or missing fields
            junk.append(HEADER + msgpack.packb(rng.choice(
                [[1, 2], {"agent": 1, "token": "t", "topic": "x"}, {"agent": "bob"}, "text", None]
            )))  # fmt: skip
        else:  # well-formed, but unknown tiers, bad topics, someone else's namespace
            topic = rng.choice(["nope/x", "private", "private/alice", "shared/team", "", "graph/"])
            junk.append(encode_subscription("bob", tokens["bob"], topic))
    with server:
        socks = [raw_sub(ctx, server.pub_address, *junk[i::6]) for i in range(6)]
        big = raw_sub(ctx, server.pub_address, HEADER + b"x" * (MAX_SUBSCRIPTION_BYTES + 1))

        async def run() -> set[tuple[str, str]]:
            alice = AsyncMemoryClient(server.address, "alice", tokens["alice"], timeout=5.0)
            stream = alice.events(["shared/team"])
            first = asyncio.ensure_future(stream.__anext__())
            await subscribed(server, 1)
            await alice.write("shared", "team", NewItem("still here"), now=0.0)
            got = await drain(first, stream)
            alice.close()
            return got

        try:
            got = asyncio.run(run())
            leaked = [received(s) for s in socks]
        finally:
            for sock in [*socks, big]:
                sock.close(linger=0)
            ctx.term()
        refused = server.inspect(
            lambda _: server.metrics.registry.get_sample_value(
                "hivemem_bus_event_subscriptions_refused_total"
            )
        )
    assert got == {("shared", "team")}
    assert leaked == [[]] * 6
    # Every signed-looking one was refused (a SUB sends a subscription it already holds
    # only once); the oversized one never reached the server.
    assert refused == sum(len({j for j in junk[i::6] if j.startswith(HEADER)}) for i in range(6))


@pytest.mark.parametrize("local", [False, True], ids=["socket", "local_transport"])
def test_the_blocking_client_iterates_events_in_its_own_thread(local: bool) -> None:
    """Also over a LocalTransport: its writes skip the socket, their events still come
    (the owner thread, woken, publishes them)."""
    server, tokens = make_server()
    with server:

        def client() -> MemoryClient:
            if local:
                return MemoryClient(
                    agent="alice", token=tokens["alice"], transport=LocalTransport(server)
                )
            return MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0)

        watcher, writer = client(), client()
        with pytest.raises(AccessDeniedError):
            next(watcher.events(["private/bob"]))
        seen: list[dict[str, Any]] = []
        reader = threading.Thread(
            target=lambda: seen.extend(watcher.events(["shared/team"], timeout=QUIET_S * 2))
        )
        reader.start()
        wait_subscribed(server, 1)  # before the writes
        ids = [writer.write("shared", "team", NewItem(f"w{i}"), now=0.0).item_id for i in range(2)]
        writer.write("private", "alice", NewItem("elsewhere"), now=0.0)
        reader.join(timeout=30)  # the iteration ends once no event came for the timeout
        watcher.close()
        writer.close()
    assert not reader.is_alive()
    assert [(e["namespace"], e["item_id"]) for e in seen] == [("team", i) for i in ids]


def test_events_of_handled_requests_go_out_before_those_of_later_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request handed to handle() (a LocalTransport) leaves its events for the owner
    thread; the next request the owner thread answers sends them first, in order, even
    if the wake-up that should have sent them has not come yet."""
    server, tokens = make_server()
    with server:
        watcher = MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0)
        seen: list[dict[str, Any]] = []
        reader = threading.Thread(
            target=lambda: seen.extend(watcher.events(["shared/team"], timeout=QUIET_S * 2))
        )
        reader.start()
        wait_subscribed(server, 1)  # before the writes
        monkeypatch.setattr(server._waker, "wake", lambda: None)  # the wake-up is late
        local = MemoryClient(agent="alice", token=tokens["alice"], transport=LocalTransport(server))
        first = local.write("shared", "team", NewItem("through handle()"), now=0.0).item_id
        second = watcher.write("shared", "team", NewItem("over the socket"), now=0.0).item_id
        reader.join(timeout=30)
        local.close()
        watcher.close()
    assert not reader.is_alive()
    assert [e["item_id"] for e in seen] == [first, second]


def _subscriptions_held(server: BusServer) -> float | None:
    return server.inspect(
        lambda _: server.metrics.registry.get_sample_value("hivemem_bus_event_subscriptions")
    )


def test_an_agent_registered_again_without_a_group_gets_none_of_its_events() -> None:
    """Carol and dave follow shared/team-r and shared/keep; the admin registers carol
    again without team-r. Her stream goes on with keep's events and gets none more of
    team-r's, while dave's gets them all; registered with team-r once more, she gets its
    events again, after a gap for the one she missed."""
    server, tokens = make_server()
    for agent in ("carol", "dave"):
        tokens[agent] = server.register(agent, ["team-r", "keep"])
    with server:
        clients = {name: MemoryClient(server.address, name, tokens[name], timeout=5.0)
                   for name in ("carol", "dave", ADMIN_AGENT)}  # fmt: skip
        writer = MemoryClient(server.address, "dave", tokens["dave"], timeout=5.0)
        seen: dict[str, list[dict[str, Any]]] = {"carol": [], "dave": []}

        def follow(name: str) -> None:
            topics = ["shared/team-r", "shared/keep"]
            seen[name].extend(clients[name].events(topics, timeout=QUIET_S * 2))

        readers = [threading.Thread(target=follow, args=(name,)) for name in seen]
        for reader in readers:
            reader.start()
        wait_subscribed(server, 4)  # two topics each, before the writes

        def write(namespace: str, text: str) -> int:
            return writer.write("shared", namespace, NewItem(text), now=0.0).item_id

        before = write("team-r", "before")
        clients[ADMIN_AGENT].register("carol", ["keep"])
        held_revoked = _subscriptions_held(server)
        after = write("team-r", "after: not carol's")
        kept = write("keep", "carol's still")
        clients[ADMIN_AGENT].register("carol", ["team-r", "keep"])
        held_again = _subscriptions_held(server)
        again = write("team-r", "carol's again")
        for reader in readers:
            reader.join(timeout=30)  # each ends once no event came for its timeout
        for client in [*clients.values(), writer]:
            client.close()
    assert not any(reader.is_alive() for reader in readers)
    assert [(e["namespace"], e["kind"], e.get("item_id")) for e in seen["carol"]] == [
        ("team-r", "add", before),
        ("keep", "add", kept),
        ("team-r", GAP, None),  # the event she may not have had
        ("team-r", "add", again),
    ]
    assert seen["carol"][2]["missed"] == 1
    assert [(e["namespace"], e["item_id"]) for e in seen["dave"]] == [
        ("team-r", before), ("team-r", after), ("keep", kept), ("team-r", again)
    ]  # fmt: skip
    assert (held_revoked, held_again) == (3, 4)  # carol's team-r is not counted meanwhile


def test_a_restarted_bus_grants_a_returning_subscriber_only_what_its_agent_may_read_now(
    tmp_path: Path,
) -> None:
    """Carol loses team-r, then the bus restarts from its data directory (the journal
    replays both registrations) on the same ports: her SUB resubscribes by itself, and
    gets keep's events again but not team-r's."""
    # two free ports, below the ephemeral range (a restarted bus binds the same ones again)
    port = free_port(following=1)
    secret, ports = new_secret(), (port, port + 1)

    def bus() -> BusServer:
        return BusServer(MemoryStore(StoreConfig(dim=DIM)), port=ports[0], pub_port=ports[1],
                         secret=secret, journal=Journal(tmp_path, "no"))  # fmt: skip

    server = bus()
    token = server.register("carol", ["team-r", "keep"])
    seen: list[dict[str, Any]] = []
    with server:
        carol = MemoryClient(server.address, "carol", token, timeout=5.0)
        # Long enough to outlast the restart: the stream lives on across it.
        reader = threading.Thread(target=lambda: seen.extend(
            carol.events(["shared/team-r", "shared/keep"], timeout=QUIET_S * 6)))  # fmt: skip
        reader.start()
        wait_subscribed(server, 2)
        with MemoryClient(server.address, ADMIN_AGENT, server.admin_token, timeout=5.0) as admin:
            admin.register("carol", ["keep"])
    with bus() as server:
        # carol's SUB reconnects and sends its subscriptions again: keep's is granted
        wait_subscribed(server, 1)
        with MemoryClient(server.address, ADMIN_AGENT, server.admin_token, timeout=5.0) as admin:
            admin.register("dave", ["team-r", "keep"])
        with MemoryClient(server.address, "dave", server.token("dave"), timeout=5.0) as dave:
            dave.write("shared", "team-r", NewItem("not carol's"), now=0.0)
            kept = dave.write("shared", "keep", NewItem("carol's"), now=0.0).item_id
        reader.join(timeout=30)
        carol.close()
    assert not reader.is_alive()
    assert [(e["namespace"], e["kind"], e.get("item_id")) for e in seen] == [("keep", "add", kept)]


def test_a_role_limited_to_some_graph_levels_may_not_follow_a_graph() -> None:
    """A graph's events name nodes and edges on every level: a role that may read only
    some levels learned of the hidden ones (ids, versions, edges) from them."""
    from hivemem.memory_bus.config import AccessConfig

    access = AccessConfig(graph_levels={"junior": [0]})
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, access=access)))
    server.register("jun", ["team"], role="junior")
    server.register("lead", ["team"])
    with server, MemoryClient(server.address, "jun", server.token("jun"), timeout=5.0) as jun:
        with pytest.raises(AccessDeniedError, match="some graph levels"):
            jun.subscribe(["graph/team"])
        assert jun.subscribe(["shared/team"])["prefixes"]  # the rest as before
        with MemoryClient(server.address, "lead", server.token("lead"), timeout=5.0) as lead:
            assert lead.subscribe(["graph/team"])["prefixes"]


def test_events_are_followed_where_the_bus_answers_when_it_reports_no_host() -> None:
    """A bus bound to every interface (``--host 0.0.0.0``) reports its event socket at
    tcp://0.0.0.0:PORT, which names no host: a subscriber on another machine connected
    to itself and heard nothing. (On one machine 0.0.0.0 reaches the local host, so only
    the address the client picks can be checked here.)"""
    from hivemem.memory_bus.async_client import reachable_pub

    assert reachable_pub("tcp://0.0.0.0:7778", "tcp://10.0.0.5:7777") == "tcp://10.0.0.5:7778"
    assert reachable_pub("tcp://*:7778", "tcp://bus.lan:7777") == "tcp://bus.lan:7778"
    assert reachable_pub("tcp://[::]:9", "tcp://[::1]:8") == "tcp://[::1]:9"
    assert reachable_pub("tcp://10.1.1.1:9", "tcp://10.2.2.2:8") == "tcp://10.1.1.1:9"
    assert reachable_pub("tcp://0.0.0.0:9", "inproc (in process)") == "tcp://0.0.0.0:9"


def test_a_message_of_more_events_than_a_request_may_hold_reaches_the_subscriber() -> None:
    """Deleting a node of 70,000 edges announces 70,001 events in one message: the
    client decoded it under the request-side limits (65,536 entries), which ended the
    stream, and every event after it was lost."""
    from hivemem.memory_bus.interfaces import Caller

    server, tokens = make_server()
    alice_caller = Caller("alice", frozenset({"team"}))
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=30.0) as alice:
        hub = alice.write("graph", "team", NewItem("hub"), now=0.0).item_id
        leaf = alice.write("graph", "team", NewItem("leaf"), now=0.0).item_id
        server.inspect(
            lambda store: [
                store.graph.add_edge(alice_caller, "team", hub, leaf, "rel", now=1.0)
                for _ in range(70_000)
            ]
        )
        kinds: dict[str, int] = {}

        def follow() -> None:
            for event in alice.events(["graph/team"], timeout=30.0):
                kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
                if event["kind"] == "add":  # the write after the delete: all came
                    return

        reader = threading.Thread(target=follow)
        reader.start()
        wait_subscribed(server, 1)  # before the delete
        alice.delete("graph", "team", hub, now=2.0)
        alice.write("graph", "team", NewItem("after"), now=3.0)
        reader.join(timeout=60)
    assert kinds == {"invalidate": 70_000, "delete": 1, "add": 1}
