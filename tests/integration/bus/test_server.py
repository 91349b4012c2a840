"""Every op through a real server and client; pipelining; events; idempotent retries."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio
from hivemem.memory_bus.client import AsyncMemoryClient, BusTimeoutError, MemoryClient
from hivemem.memory_bus.errors import (
    AccessDeniedError,
    HivememError,
    InvalidInputError,
    ItemNotFoundError,
    VersionConflictError,
)
from hivemem.memory_bus.item import NewItem, WriteOp
from hivemem.memory_bus.pages import PREFAULTER
from hivemem.memory_bus.protocol import HEADER, ProtocolError, decode_reply, encode_request
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, Bus, make_server, subscribed


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_vector_tier_ops(alice: MemoryClient) -> None:
    first = alice.write(
        "shared", "team", NewItem("the vault code is 4417", meta={"key": "vault"}), now=0.0
    )
    assert first.op is WriteOp.ADD
    results = alice.write_many(
        "private", [("alice", NewItem(f"note {i}", vector=vec(i))) for i in range(5)], now=1.0
    )
    assert [r.op for r in results] == [WriteOp.ADD] * 5
    item = alice.get("shared", "team", first.item_id)
    assert item.text == "the vault code is 4417" and item.meta == {"key": "vault"}
    hits = alice.search("private", "alice", vec(3), k=2, now=2.0)
    assert hits[0].id == results[3].item_id and hits[0].score > 0.99
    many = alice.search_many("private", [("alice", vec(1), 1), ("alice", vec(4), 1)], now=3.0)
    assert [h[0].id for h in many] == [results[1].item_id, results[4].item_id]
    updated = alice.update(
        "shared", "team", first.item_id, expected_version=1, now=4.0, text="the vault code is 9"
    )
    assert updated.version == 2
    with pytest.raises(VersionConflictError):
        alice.update("shared", "team", first.item_id, expected_version=1, now=5.0, importance=1.0)
    assert [h["version"] for h in alice.history("shared", "team", first.item_id)] == [1, 2]
    alice.delete("shared", "team", first.item_id, now=6.0)
    with pytest.raises(ItemNotFoundError):
        alice.get("shared", "team", first.item_id)
    assert alice.stats()["private"]["items"] == 5


def test_graph_ops(alice: MemoryClient) -> None:
    a = alice.write("graph", "team", NewItem("door A locked"), now=0.0).item_id
    b = alice.write("graph", "team", NewItem("door B open"), now=0.0).item_id
    edge = alice.add_edge("team", a, b, "next_to", now=0.0)
    assert alice.neighbors("team", a) == [b]
    alice.invalidate_edge("team", edge, at=5.0)
    assert alice.edges("team", as_of=6.0) == [] and len(alice.edges("team", as_of=1.0)) == 1
    parent = alice.promote("team", [a, b], NewItem("try every door", level=1), now=7.0)
    assert sorted(alice.neighbors("team", parent, direction="out")) == sorted([a, b])
    hits = alice.retrieve("team", alice_embed(alice, "door open"), k=3, now=8.0, method="ppr")
    assert {h.id for h in hits} <= {a, b, parent} and hits
    every = [e["id"] for e in alice.edges("team")]
    first = alice.edges("team", limit=2)
    assert [e["id"] for e in first] == every[:2] and len(every) == 3
    assert [e["id"] for e in alice.edges("team", after=first[-1]["id"], limit=2)] == every[2:]
    with pytest.raises(InvalidInputError, match="limit"):
        alice.edges("team", limit=0)


def alice_embed(client: MemoryClient, text: str) -> np.ndarray:
    from hivemem.memory_bus.embedder import HashingEmbedder

    return HashingEmbedder(DIM)([text])[0]


def test_access_and_tokens(bus: Bus, alice: MemoryClient) -> None:
    secret = alice.write("private", "alice", NewItem("alice's secret"), now=0.0).item_id
    with bus.client("bob") as bob:
        with pytest.raises(AccessDeniedError):
            bob.get("private", "alice", secret)
        with pytest.raises(AccessDeniedError):
            bob.write("shared", "team", NewItem("intrusion"), now=1.0)
        with pytest.raises(AccessDeniedError):
            bob.search("private", "alice", vec(0), now=1.0)
        with pytest.raises(AccessDeniedError):
            bob.register("bob", ["team"])  # only the admin registers
        forged = bob.as_agent("alice", "not-her-token")
        with pytest.raises(ProtocolError, match="token"):
            forged.get("private", "alice", secret)
    assert alice.get("private", "alice", secret).text == "alice's secret"


def test_admin_registers_agents_at_run_time(bus: Bus) -> None:
    with bus.client("__admin__") as admin:
        token = admin.register("carol", ["team"])["token"]
        carol = admin.as_agent("carol", token)
        assert carol.write("shared", "team", NewItem("carol was here"), now=0.0).op is WriteOp.ADD


def test_pipelined_requests_all_matched(bus: Bus) -> None:
    async def run() -> list[int]:
        client = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"])
        try:
            writes = [
                client.write("private", "alice", NewItem(f"fact {i}", vector=vec(i)), now=float(i))
                for i in range(60)
            ]
            results = await asyncio.gather(*writes)
            found = await asyncio.gather(
                *(client.search("private", "alice", vec(i), k=1, now=99.0) for i in range(60))
            )
            return [r.item_id for r in results] + [h[0].id for h in found]
        finally:
            client.close()

    ids = asyncio.run(run())
    assert ids[:60] == ids[60:] and len(set(ids[:60])) == 60


def test_a_batch_answered_before_it_is_stored_is_seen_by_every_later_request(bus: Bus) -> None:
    """The server stores a batch's rows just after its reply (apply after reply): a read
    pipelined behind the write on the same socket, and a read on another connection sent
    once the reply is in, must both find every row."""

    async def run() -> None:
        writer = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"], timeout=5.0)
        reader = bus.client("alice", timeout=5.0)
        try:
            for r in range(20):
                rows = [
                    ("alice", NewItem(f"round {r} row {i}", vector=vec(100 * r + i)))
                    for i in range(16)
                ]
                write = asyncio.ensure_future(writer.write_many("private", rows, now=float(r)))
                behind = asyncio.ensure_future(  # sent before the write is answered
                    writer.search("private", "alice", vec(100 * r + 15), k=1, now=float(r))
                )
                results, hits = await asyncio.gather(write, behind)
                assert [x.op for x in results] == [WriteOp.ADD] * 16
                assert hits[0].id == results[15].item_id
                found = reader.search("private", "alice", vec(100 * r + 3), k=1, now=float(r))
                assert found[0].id == results[3].item_id
                assert reader.stats()["private"]["items"] == 16 * (r + 1)
        finally:
            writer.close()
            reader.close()

    asyncio.run(run())


def test_replies_out_of_order_reach_their_callers() -> None:
    """A real ROUTER that answers in reverse order: each caller still gets its own reply."""

    async def run() -> list[object]:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        client = AsyncMemoryClient(f"tcp://127.0.0.1:{port}", "x", "t", timeout=5.0)

        async def serve() -> None:
            held = [await router.recv_multipart() for _ in range(5)]
            for ident, _, payload in reversed(held):
                req = msgpack.unpackb(payload)
                reply = msgpack.packb({"id": req["id"], "ok": True, "result": req["args"]["tag"]})
                await router.send_multipart([ident, HEADER, reply])

        server = asyncio.ensure_future(serve())
        answers = await asyncio.gather(*(client._call("ping", {"tag": i}) for i in range(5)))
        await server
        client.close()
        router.close(linger=0)
        ctx.term()
        return answers

    assert asyncio.run(run()) == [0, 1, 2, 3, 4]


def test_retried_write_applies_once(bus: Bus, dealer: zmq.Socket[bytes]) -> None:
    item = {
        "text": "only once",
        "meta": {},
        "importance": 0.0,
        "valid_to": float("inf"),
        "level": 0,
    }
    frames = encode_request(
        7,
        12345,
        "write",
        "alice",
        bus.tokens["alice"],
        {"tier": "shared", "namespace": "team", "item": item, "now": 0.0},
    )
    replies = []
    for _ in range(3):
        dealer.send_multipart(frames)
        replies.append(decode_reply(dealer.recv_multipart()))
    assert replies[0] == replies[1] == replies[2] and replies[0].ok
    assert bus.server.inspect(MemoryStore.stats)["shared"]["items"] == 1


def test_event_stream(bus: Bus, alice: MemoryClient) -> None:
    async def run() -> list[dict[str, object]]:
        client = AsyncMemoryClient(bus.server.address, "alice", bus.tokens["alice"])
        stream = client.events(["shared/team"])
        first = asyncio.ensure_future(stream.__anext__())
        await subscribed(bus.server, 1)  # before anything is published
        ids = [
            (await client.write("shared", "team", NewItem(f"e{i}"), now=0.0)).item_id
            for i in range(2)
        ]
        await client.write("private", "alice", NewItem("not on this topic"), now=0.0)
        events = [await asyncio.wait_for(first, 5), await asyncio.wait_for(stream.__anext__(), 5)]
        await stream.aclose()
        client.close()
        return [{**e, "expected": i} for e, i in zip(events, ids, strict=True)]

    for event in asyncio.run(run()):
        assert (
            event["kind"] == "add"
            and event["namespace"] == "team"
            and event["item_id"] == event["expected"]
        )


def test_timeout_then_reconnect() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = MemoryClient(f"tcp://127.0.0.1:{port}", "x", "t", timeout=0.3, retries=1)
    with pytest.raises(BusTimeoutError):
        client.ping()  # nobody answers
    received = 0
    while router.poll(100):
        router.recv_multipart()
        received += 1
    assert received == 2  # the request and its retry, the same id
    client.close()
    router.close(linger=0)
    ctx.term()


def test_a_busy_polling_server_answers_every_request_and_stops() -> None:
    """With spin_us the owner thread polls without sleeping after each answer; requests
    sent in bursts and after pauses (longer than the spin) are all answered, and stop()
    still ends the loop."""
    server, tokens = make_server(spin_us=2_000)
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as client:
        ids = []
        for burst in range(3):
            ids += [
                client.write(
                    "private", "alice", NewItem(f"fact {burst}.{i}", vector=vec(i)), now=0.0
                ).item_id
                for i in range(20)
            ]
            time.sleep(0.01)  # past the spin: the loop sleeps in poll again
        assert len(set(ids)) == 60
        assert {h.id for h in client.search("private", "alice", vec(3), k=60, now=1.0)} == set(ids)
    assert server._thread is not None and not server._thread.is_alive()


def test_owner_thread_id_names_the_thread_that_changes_the_store() -> None:
    """The id the server gives for its owner thread is the kernel id of the thread that
    applies writes (a store listener runs there), and None before it starts."""
    server, tokens = make_server()
    assert server.owner_thread_id is None
    seen: list[int] = []
    server.store.subscribe(lambda event: seen.append(threading.get_native_id()))
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as client:
        client.write("private", "alice", NewItem("a fact", vector=vec(1)), now=0.0)
        client.ping()  # the write's rows enter the store after its reply; this one after them
        assert seen and set(seen) == {server.owner_thread_id}
        assert server.owner_thread_id != threading.get_native_id()


def test_a_busy_polling_server_sleeps_when_requests_come_slower_than_its_spin() -> None:
    """Requests 0.4 s apart to a server that would spin 0.3 s after each: a spin after
    every answer would burn ~0.3 s of CPU per request; an adaptive one none."""
    server, tokens = make_server(spin_us=300_000)
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as client:
        client.ping()
        # the owner thread's own CPU time (the process's would count the other threads of
        # the test worker too: Ray's, the client's)
        schedstat = Path(f"/proc/self/task/{server.owner_thread_id}/schedstat")
        before = int(schedstat.read_text().split()[0])
        for i in range(4):
            time.sleep(0.4)
            client.write("private", "alice", NewItem(f"fact {i}", vector=vec(i)), now=0.0)
        cpu = (int(schedstat.read_text().split()[0]) - before) / 1e9
    assert cpu < 0.4, f"the owner thread used {cpu:.2f} s of CPU in 1.6 s of sparse requests"


def test_the_owner_thread_faults_in_pages_ahead_of_a_growing_namespace_when_idle() -> None:
    """A namespace past 1 MiB of vectors has a mapping of its own; the pages just ahead of
    its writer are faulted in by the owner thread between requests (IndexConfig.prefault
    "idle", the default), and every row written is kept."""
    if not PREFAULTER.enabled:
        pytest.skip("no madvise(MADV_POPULATE_WRITE) here (Linux 5.14+)")
    server, tokens = make_server()
    with server, MemoryClient(server.address, "alice", tokens["alice"], timeout=10.0) as client:
        before = PREFAULTER.populated
        item = NewItem("a row", vector=vec(1))
        for _ in range(40):  # 10,240 rows of 32 floats: past 8,192, a mapping of its own
            client.write_many("private", [("alice", item)] * 256, now=0.0)
        deadline = time.monotonic() + 10
        while PREFAULTER.populated == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert PREFAULTER.populated > before
        assert client.stats()["private"]["items"] == 40 * 256


@pytest.mark.parametrize("spin_us", [-1, 1.5, True, "200"])
def test_spin_must_be_a_whole_number_of_microseconds(spin_us: object) -> None:
    with pytest.raises(InvalidInputError, match="spin_us"):
        make_server(spin_us=spin_us)


@pytest.mark.parametrize("freeze", [1, "no", None])
def test_freezing_old_objects_is_a_bool(freeze: object) -> None:
    with pytest.raises(InvalidInputError, match="freeze_old_objects"):
        make_server(freeze_old_objects=freeze)


def test_stop_wakes_the_owner_thread_from_its_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() does not wait for the owner thread's poll to time out: with a poll of ten
    minutes, the server still stops (a runner starts and stops one bus per episode)."""
    import hivemem.memory_bus.owner_loop as owner_loop

    monkeypatch.setattr(owner_loop, "POLL_MS", 600_000)
    server, tokens = make_server()
    server.start()
    with MemoryClient(server.address, "alice", tokens["alice"], timeout=5.0) as client:
        client.write("private", "alice", NewItem("fact", vector=vec(1)), now=0.0)
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    stopping.join(timeout=20.0)
    assert not stopping.is_alive(), "stop() waited for the poll to time out"
    assert server._thread is not None and not server._thread.is_alive()
    server.stop()  # a second stop does nothing


def test_a_server_that_failed_to_start_keeps_no_wake_pipe() -> None:
    server, _ = make_server()
    server.start()
    try:
        clash, _ = make_server(port=int(server.address.rsplit(":", 1)[1]))
        with pytest.raises(HivememError, match="failed to start"):
            clash.start()
        assert clash._waker.fd == -1  # closed
    finally:
        server.stop()


def test_a_bus_on_ipv6_loopback_answers_and_sends_events() -> None:
    """`hivemem bus serve --host ::1` failed ("No such device"): ZeroMQ needs IPv6 turned
    on, and the address in brackets, on both ends."""
    import socket

    from hivemem.memory_bus.config import StoreConfig
    from hivemem.memory_bus.server import BusServer

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)), host="::1")
    token = server.register("alice", [])
    with server:
        assert server.address.startswith("tcp://[::1]:") and server.pub_address.startswith("tcp://[::1]:")  # fmt: skip

        async def follow() -> list[str]:
            async with AsyncMemoryClient(server.address, "alice", token, timeout=5.0) as alice:
                stream = alice.events(["private/alice"])
                first = asyncio.ensure_future(stream.__anext__())
                await subscribed(server, 1)  # the subscription reaches the bus
                await alice.write("private", "alice", NewItem("over v6"), now=0.0)
                event = await asyncio.wait_for(first, 10)
                await stream.aclose()
                hits = await alice.search("private", "alice", "over v6", k=1, now=None)
                return [event["kind"], hits[0].item.text]

        assert asyncio.run(follow()) == ["add", "over v6"]
