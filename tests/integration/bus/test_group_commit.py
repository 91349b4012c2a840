"""Group commit under ``fsync always``: one fsync covers the requests waiting together, no
reply leaves before it, and a failed fsync stops the server without acknowledging."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq
from hivemem.memory_bus.codec import encode_new_item
from hivemem.memory_bus.errors import JournalSyncError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.owner_loop import GROUP_MAX
from hivemem.memory_bus.protocol import (
    HEADER,
    decode_reply,
    encode_request,
    encode_subscription,
    unpack,
)
from hivemem.memory_bus.server import BusServer

from .conftest import make_server, wait_subscribed

WRITES = 32
EMPTY = SimpleNamespace(items={})


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The times of every fsync this process makes (each one still runs)."""
    times: list[float] = []
    real = os.fsync

    def counted(fd: int) -> None:
        real(fd)
        times.append(time.monotonic())

    monkeypatch.setattr(os, "fsync", counted)
    yield times


def dealer(address: str) -> zmq.Socket[bytes]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(address)
    return sock


def write_frames(server: BusServer, token: str, n: int, client: int = 77) -> list[bytes]:
    args = {"tier": "private", "namespace": "alice", "item": encode_new_item(NewItem(f"fact {n}"))}
    return encode_request(n, client, "write", "alice", token, {**args, "now": float(n)})


def held_texts(server: BusServer) -> list[str]:
    return server.inspect(
        lambda store: sorted(
            it.text for it in store.private.namespaces.get("alice", EMPTY).items.values()
        )
    )


def send_while_held(server: BusServer, sock: zmq.Socket[bytes], frames: list[list[bytes]]) -> None:
    """Send every request while the owner thread is held off, so that they wait together."""
    held, release = threading.Event(), threading.Event()
    blocker = threading.Thread(
        target=server.inspect, args=(lambda _: (held.set(), release.wait(10)),)
    )
    blocker.start()
    held.wait(10)
    for parts in frames:
        sock.send_multipart(parts)
    # Let them cross loopback into the server's queue: until the connection's bytes are
    # all read by the server's I/O thread (a fixed 0.3 s may not do on a loaded machine).
    port = int(server.address.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while not loopback_drained(port) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # (the I/O thread hands what it read to the socket's queue)
    release.set()
    blocker.join()


def loopback_drained(port: int) -> bool:
    """Whether every TCP connection to or from ``port`` has nothing waiting to be sent or
    read (``/proc/net/tcp``'s tx and rx queues), and there is one."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    queues = [
        fields[4]
        for fields in (line.split() for line in lines)
        if fields[3] == "01"  # established
        and port in (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16))
    ]
    return bool(queues) and all(q == "00000000:00000000" for q in queues)


def test_one_fsync_covers_the_writes_that_wait_together(
    tmp_path: Path, fsyncs: list[float]
) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    with server:
        sock = dealer(server.address)
        before = len(fsyncs)
        send_while_held(
            server, sock, [write_frames(server, tokens["alice"], n) for n in range(WRITES)]
        )
        replies = [decode_reply(sock.recv_multipart()) for _ in range(WRITES)]
        used = len(fsyncs) - before
        sock.close(linger=0)
        assert sorted(r.id for r in replies) == list(range(WRITES))
        assert all(r.ok for r in replies), [r.error for r in replies if not r.ok][:2]
        # Per-request fsync made one each; waiting together, they share one.
        assert used <= -(-WRITES // GROUP_MAX) + 1
        texts = held_texts(server)
    again, _ = make_server(journal=Journal(tmp_path, "always"))
    with again:
        assert held_texts(again) == texts == sorted(f"fact {n}" for n in range(WRITES))


def test_no_reply_leaves_before_its_fsync(tmp_path: Path, fsyncs: list[float]) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    with server:
        sock = dealer(server.address)
        send_while_held(server, sock, [write_frames(server, tokens["alice"], n) for n in range(8)])
        for _ in range(8):
            sock.recv_multipart()
            arrived = time.monotonic()
            assert fsyncs and fsyncs[-1] <= arrived
        sock.close(linger=0)


def test_reads_alone_wait_for_no_fsync(tmp_path: Path, fsyncs: list[float]) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    with server:
        sock = dealer(server.address)
        sock.send_multipart(write_frames(server, tokens["alice"], 0))
        assert decode_reply(sock.recv_multipart()).ok
        before = len(fsyncs)
        args = {"tier": "private", "namespace": "alice", "text": "fact", "k": 1, "now": 5.0}
        for n in range(20):  # recalls are journaled, and left for the next change's fsync
            sock.send_multipart(
                encode_request(100 + n, 77, "search", "alice", tokens["alice"], args)
            )
            assert decode_reply(sock.recv_multipart()).ok
        assert len(fsyncs) == before
        sock.close(linger=0)


def test_a_failed_fsync_acknowledges_nothing_and_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    server.start()
    sock = dealer(server.address)
    sock.send_multipart(write_frames(server, tokens["alice"], 0))
    assert decode_reply(sock.recv_multipart()).ok

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    sock.send_multipart(write_frames(server, tokens["alice"], 1))
    sock.setsockopt(zmq.RCVTIMEO, 1500)
    with pytest.raises(zmq.Again):  # never acknowledged
        sock.recv_multipart()
    sock.close(linger=0)
    assert isinstance(server.failure, JournalSyncError)
    assert "fsync failed" in server.failure.message
    assert not server.serving
    with pytest.raises(JournalSyncError):  # what `hivemem bus serve` exits with
        server.serve_forever()
    monkeypatch.undo()

    # Restarted, the log holds what reached the file; the same request again (same client
    # and id, as a client's retry) is answered from it, not applied twice.
    again, tokens = make_server(journal=Journal(tmp_path, "always"))
    with again:
        sock = dealer(again.address)
        sock.send_multipart(write_frames(again, tokens["alice"], 1))
        assert decode_reply(sock.recv_multipart()).ok
        sock.close(linger=0)
        assert held_texts(again) == ["fact 0", "fact 1"]


def failing_fsync_in(thread: str, once: bool = False) -> tuple[list[int], object]:
    """An ``os.fsync`` that raises EIO in the thread named ``thread`` (with ``once``, the
    first time only: Linux reports a writeback error once, and the next fsync succeeds);
    the calls it saw there, and the function."""
    seen: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name == thread:
            seen.append(fd)
            if not once or len(seen) == 1:
                raise OSError(errno.EIO, "Input/output error")
        real(fd)

    return seen, fsync


def test_a_snapshot_due_in_a_group_waits_for_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot started inside the group fsynced the group's records first; its failure
    was taken for a failed snapshot, and the whole group was then acknowledged."""
    server, tokens = make_server(journal=Journal(tmp_path, "always"), snapshot_every=6)
    with server:
        sock = dealer(server.address)
        sock.send_multipart(write_frames(server, tokens["alice"], 0))
        assert decode_reply(sock.recv_multipart()).ok
        _, fsync = failing_fsync_in("hivemem-bus", once=True)
        monkeypatch.setattr(os, "fsync", fsync)
        frames = [write_frames(server, tokens["alice"], n) for n in range(1, 11)]
        send_while_held(server, sock, [*frames, [HEADER, b"\xc1"]])  # and one undecodable
        sock.setsockopt(zmq.RCVTIMEO, 1000)
        with pytest.raises(zmq.Again):
            sock.recv_multipart()
        sock.close(linger=0)
        assert isinstance(server.failure, JournalSyncError) and not server.serving
        # nothing withheld is counted, not even the undecodable one's refusal
        assert (
            server.metrics.registry.get_sample_value(
                "hivemem_bus_requests_total", {"op": "invalid", "code": "bad_frame"}
            )
            is None
        )


def test_a_failed_group_announces_nothing_and_the_bus_answers_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    server.start()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 1000)
    sub.connect(server.pub_address)
    sub.setsockopt(zmq.SUBSCRIBE, encode_subscription("alice", tokens["alice"], "private/alice"))
    wait_subscribed(server, 1)  # else nothing announced would prove nothing
    sock = dealer(server.address)
    _, fsync = failing_fsync_in("hivemem-bus")
    monkeypatch.setattr(os, "fsync", fsync)
    sock.send_multipart(write_frames(server, tokens["alice"], 1))
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    with pytest.raises(zmq.Again):
        sock.recv_multipart()
    sock.close(linger=0)
    events = []
    with contextlib.suppress(zmq.Again):
        while True:  # marks may come; no add may
            events += [e["kind"] for e in unpack(sub.recv_multipart()[-1]) if "kind" in e]
    sub.close(linger=0)
    assert "add" not in events
    monkeypatch.undo()
    # In process, as a LocalTransport calls it: refused, not answered from the held change.
    reply = decode_reply([HEADER, server.handle(write_frames(server, tokens["alice"], 1))])
    assert not reply.ok and "the bus has stopped" in reply.error["message"]
    sample = server.metrics.registry.get_sample_value
    assert sample("hivemem_bus_requests_total", {"op": "write", "code": "ok"}) is None
    assert sample("hivemem_bus_requests_total", {"op": "write", "code": "journal_write_failed"}) == 1  # fmt: skip
    server.stop()


def test_a_failed_fsync_of_a_request_handled_in_process_stops_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    server.start()
    _, fsync = failing_fsync_in(threading.current_thread().name)
    monkeypatch.setattr(os, "fsync", fsync)
    reply = decode_reply([HEADER, server.handle(write_frames(server, tokens["alice"], 1))])
    monkeypatch.undo()
    assert not reply.ok and reply.error["code"] == "journal_write_failed"
    assert isinstance(server.failure, JournalSyncError)
    server.stop()
    assert not server.serving
    again, _ = make_server(journal=Journal(tmp_path, "always"))
    with again:
        assert held_texts(again) == []  # refused, and not applied


def slow_fsync(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[float]:
    """Make every fsync take ``seconds`` longer; the times they end."""
    real, ended = os.fsync, []

    def slow(fd: int) -> None:
        time.sleep(seconds)
        real(fd)
        ended.append(time.monotonic())

    monkeypatch.setattr(os, "fsync", slow)
    return ended


def test_a_read_at_the_head_of_a_group_does_not_wait_for_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    with server:
        sock = dealer(server.address)
        sent = slow_fsync(monkeypatch, 0.5)
        read = encode_request(
            900, 77, "scan", "bob", tokens["bob"], {"tier": "private", "namespace": "bob"}
        )
        send_while_held(server, sock, [read, write_frames(server, tokens["alice"], 1)])
        first = decode_reply(sock.recv_multipart())
        answered = time.monotonic()
        second = decode_reply(sock.recv_multipart())
        sock.close(linger=0)
        assert (first.id, second.id) == (900, 1)
        assert sent and answered < sent[0]  # the read came back while the disk was busy


def test_a_request_waiting_for_the_fsync_counts_it_in_its_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, tokens = make_server(journal=Journal(tmp_path, "always"))
    with server:
        sock = dealer(server.address)
        slow_fsync(monkeypatch, 0.2)
        sock.send_multipart(write_frames(server, tokens["alice"], 1))
        assert decode_reply(sock.recv_multipart()).ok
        sock.close(linger=0)
        registry = server.metrics.registry
        labels = {"op": "write"}
        assert registry.get_sample_value("hivemem_bus_request_duration_seconds_count", labels) == 1
        assert registry.get_sample_value("hivemem_bus_request_duration_seconds_sum", labels) >= 0.2
