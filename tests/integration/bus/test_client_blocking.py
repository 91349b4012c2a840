"""MemoryClient's blocking calls on their own socket: retries, timeouts, order, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hivemem.memory_bus.client import AsyncMemoryClient, BusTimeoutError, MemoryClient
from hivemem.memory_bus.errors import HivememError, InvalidInputError, ItemNotFoundError
from hivemem.memory_bus.item import NewItem, WriteOp
from hivemem.memory_bus.protocol import HEADER, ProtocolError
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, Bus

# One request a fake server received: the DEALER's routing identity and the decoded body.
Received = tuple[bytes, dict[str, Any]]


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@contextmanager
def fake_server(
    answer: Callable[[zmq.Socket[bytes], Received], None],
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A ROUTER on a thread that hands each request to ``answer``; yields (address, requests)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    received: list[dict[str, Any]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if router.poll(50):
                ident, _, payload = router.recv_multipart()
                body = msgpack.unpackb(payload)
                received.append(body)
                answer(router, (ident, body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}", received
    finally:
        stop.set()
        thread.join(5)
        router.close(linger=0)
        ctx.term()


def reply(router: zmq.Socket[bytes], ident: bytes, req_id: int, result: Any) -> None:
    router.send_multipart(
        [ident, HEADER, msgpack.packb({"id": req_id, "ok": True, "result": result})]
    )


def test_blocking_ops_end_to_end(alice: MemoryClient) -> None:
    first = alice.write("shared", "team", NewItem("the vault code is 4417"), now=0.0)
    assert first.op is WriteOp.ADD
    assert alice.get("shared", "team", first.item_id).text == "the vault code is 4417"
    written = alice.write("private", "alice", NewItem("a note", vector=vec(1)), now=1.0)
    assert alice.search("private", "alice", vec(1), k=1, now=2.0)[0].id == written.item_id
    with pytest.raises(ItemNotFoundError):
        alice.get("shared", "team", first.item_id + 1000)


def test_blocking_call_does_not_need_the_loop_thread(alice: MemoryClient) -> None:
    """With the client's event loop held busy, a blocking call is still answered."""
    release = threading.Event()
    alice._loop.call_soon_threadsafe(release.wait, 30)
    answered: list[Any] = []
    caller = threading.Thread(target=lambda: answered.append(alice.ping()))
    caller.start()
    caller.join(5)
    release.set()
    assert answered and answered[0]["agent"] == "alice"


def test_retried_write_is_applied_once(bus: Bus) -> None:
    """A proxy passes the first attempt on but drops its reply: the retry is deduplicated."""
    ctx = zmq.Context()
    upstream = ctx.socket(zmq.DEALER)
    upstream.setsockopt(zmq.LINGER, 0)
    upstream.connect(bus.server.address)

    def forward(router: zmq.Socket[bytes], request: Received) -> None:
        ident, body = request
        upstream.send_multipart([HEADER, msgpack.packb(body)])
        if not upstream.poll(5000):
            return  # the real server did not answer: the client times out, the test fails
        answer = upstream.recv_multipart()
        if len(received) > 1:  # the first reply is lost on the way back
            router.send_multipart([ident, *answer])

    with fake_server(forward) as (address, received):
        client = MemoryClient(address, "alice", bus.tokens["alice"], timeout=0.5, retries=2)
        try:
            result = client.write("shared", "team", NewItem("only once"), now=0.0)
        finally:
            client.close()
    upstream.close(linger=0)
    ctx.term()
    assert len(received) == 2 and received[0]["id"] == received[1]["id"]
    assert bus.server.inspect(MemoryStore.stats)["shared"]["items"] == 1
    with bus.client("alice", timeout=5.0) as reader:
        assert reader.get("shared", "team", result.item_id).text == "only once"


def test_timeout_after_every_attempt() -> None:
    with fake_server(lambda router, request: None) as (address, received):
        client = MemoryClient(address, "x", "t", timeout=0.2, retries=2)
        try:
            with pytest.raises(BusTimeoutError) as caught:
                client.ping()
        finally:
            client.close()
    assert len(received) == 3, "the request and its two retries"
    assert len({r["id"] for r in received}) == 1 and len({r["client"] for r in received}) == 1
    assert caught.value.details["attempts"] == 3
    assert str(caught.value) == f"no reply from {address} after 3 attempts of 0.2 s"
    with (
        fake_server(lambda router, request: None) as (address, _),
        MemoryClient(address, "x", "t", timeout=0.2, retries=0) as once,
        pytest.raises(BusTimeoutError, match=r"after 1 attempt of 0\.2 s$"),  # not "attempts"
    ):
        once.ping()


def test_replies_of_other_ids_are_dropped() -> None:
    def answer_twice(router: zmq.Socket[bytes], request: Received) -> None:
        ident, body = request
        reply(router, ident, body["id"] + 1000, "someone else's")
        reply(router, ident, body["id"], "mine")

    with fake_server(answer_twice) as (address, _), MemoryClient(address, timeout=2.0) as client:
        assert [client.ping(), client.ping()] == ["mine", "mine"]


def test_wrong_token_is_unauthenticated(bus: Bus) -> None:
    with (
        MemoryClient(bus.server.address, "alice", bus.tokens["bob"], timeout=5.0) as client,
        pytest.raises(ProtocolError) as caught,
    ):
        client.write("private", "alice", NewItem("not mine to write"), now=0.0)
    assert caught.value.code == "unauthenticated"
    assert bus.server.inspect(MemoryStore.stats)["private"]["items"] == 0


def test_zmq_errors_become_hivemem_errors() -> None:
    client = MemoryClient("nosuchtransport://x", timeout=0.5)
    with pytest.raises(HivememError) as caught:
        client.ping()
    assert isinstance(caught.value.__cause__, zmq.ZMQError)
    client.close()
    with pytest.raises(HivememError, match="closed"):
        client.ping()
    client.close()  # a second close does nothing


def test_blocking_call_waits_for_nowait_requests(alice: MemoryClient) -> None:
    """The nowait writes go out on another socket, yet the blocking reads see all of them."""
    futures = [
        alice.nowait().write("private", "alice", NewItem(f"fact {i}", vector=vec(i)), now=0.0)
        for i in range(20)
    ]
    assert alice.stats()["private"]["items"] == 20
    assert all(f.done() for f in futures)
    last = futures[-1].result().item_id
    assert alice.search("private", "alice", vec(19), k=1, now=1.0)[0].id == last


def test_two_threads_share_one_client(bus: Bus, alice: MemoryClient) -> None:
    bob = alice.as_agent("bob", bus.tokens["bob"])
    start = threading.Barrier(2)
    written: dict[str, list[tuple[int, str]]] = {"alice": [], "bob": []}

    def writer(client: MemoryClient, agent: str) -> None:
        start.wait(5)
        for i in range(50):
            text = f"{agent} {i}"
            written[agent].append(
                (client.write("private", agent, NewItem(text), now=0.0).item_id, text)
            )

    threads = [threading.Thread(target=writer, args=c) for c in ((alice, "alice"), (bob, "bob"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for agent, client in (("alice", alice), ("bob", bob)):
        assert len(written[agent]) == 50
        assert [client.get("private", agent, i).text for i, _ in written[agent]] == [
            text for _, text in written[agent]
        ]


def test_both_paths_number_requests_in_one_sequence(alice: MemoryClient) -> None:
    """Ids of blocking and nowait requests never repeat (a repeat would be deduplicated)."""
    ids = [
        alice.write("private", "alice", NewItem("a"), now=0.0).item_id,
        alice.nowait().write("private", "alice", NewItem("b"), now=0.0).result(5).item_id,
        alice.write("private", "alice", NewItem("c"), now=0.0).item_id,
    ]
    assert len(set(ids)) == 3
    assert alice.stats()["private"]["items"] == 3


def test_replay_with_the_same_client_id_covers_both_paths(bus: Bus) -> None:
    """After ``number_requests_from``, a replay is answered from memory on both paths."""
    token = bus.tokens["alice"]
    results = []
    for run in range(2):
        with MemoryClient(bus.server.address, "alice", token, client_id=4242) as client:
            if run:  # the replaying process has sent other requests first
                client.ping()
                client.nowait().ping().result(5)
            client.number_requests_from(500)
            blocking = client.write("private", "alice", NewItem("first"), now=0.0)
            queued = client.nowait().write("private", "alice", NewItem("second"), now=0.0)
            results.append((blocking.item_id, queued.result(5).item_id))
    assert results[0] == results[1] and results[0][0] != results[0][1]
    assert bus.server.inspect(MemoryStore.stats)["private"]["items"] == 2


def test_async_and_nowait_paths_translate_errors_too() -> None:
    async def bad_address() -> None:
        client = AsyncMemoryClient("nosuchtransport://x", timeout=0.5)
        try:
            await client.ping()
        finally:
            client.close()

    with pytest.raises(HivememError) as caught:
        asyncio.run(bad_address())
    assert isinstance(caught.value.__cause__, zmq.ZMQError)
    client = MemoryClient("nosuchtransport://x", timeout=0.5)
    with pytest.raises(HivememError):
        client.nowait().ping().result(timeout=5)
    client.close()
    with pytest.raises(HivememError, match="closed"):
        client.nowait().ping()


def test_a_reply_of_more_than_65536_entries_is_received_once() -> None:
    """Replies were decoded under the requests' limits: 70,000 edges were "not a reply",
    sent again twice (the server doing the work each time), then a BusTimeoutError."""
    edges = list(range(70_000))

    def answer(router: zmq.Socket[bytes], request: Received) -> None:
        ident, body = request
        reply(router, ident, body["id"], edges)

    with fake_server(answer) as (address, received), MemoryClient(address, timeout=2.0) as client:
        assert client.edges("team") == edges
        assert client.nowait().edges("team").result(timeout=5) == edges
    assert len(received) == 2, "each call sent once"


def test_a_reply_whose_body_cannot_be_decoded_fails_its_request_at_once() -> None:
    """Its id is readable: the request fails with a ProtocolError instead of being sent
    again for a reply that would come back the same."""

    def answer(router: zmq.Socket[bytes], request: Received) -> None:
        ident, body = request
        bad = msgpack.packb({"id": body["id"], "ok": True, "result": msgpack.ExtType(1, b"x")})
        router.send_multipart([ident, HEADER, bad])

    with fake_server(answer) as (address, received):
        client = MemoryClient(address, timeout=2.0, retries=2)
        try:
            start = time.monotonic()
            with pytest.raises(ProtocolError) as caught:
                client.ping()
            assert time.monotonic() - start < 1.0
        finally:
            client.close()
    assert caught.value.code == "bad_frame" and len(received) == 1


def test_timeout_none_waits_for_ever_and_bad_patience_is_refused(bus: Bus) -> None:
    """None crashed the blocking path (float + None); 0, -1 and retries=-1 were taken,
    and a write was sent, then failed "after 0 attempts"."""
    with bus.client("alice", timeout=None) as client:
        assert client.ping()["agent"] == "alice"
        assert client.nowait().ping().result(timeout=5)["agent"] == "alice"
    for bad in ({"timeout": 0}, {"timeout": -1.0}, {"timeout": "5"}, {"retries": -1}):
        with pytest.raises(InvalidInputError) as caught:
            bus.client("alice", **bad)
        assert caught.value.field == next(iter(bad))
    with pytest.raises(InvalidInputError, match="retries"):
        AsyncMemoryClient(bus.server.address, "alice", "t", retries=True)  # type: ignore[arg-type]
