"""What the event feed logs about bare subscriptions: only those that get nothing."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import GAP, MARK, encode_subscription
from hivemem.memory_bus.publisher import MARK_PERIOD_S
from hivemem.memory_bus.server import BusServer

from .conftest import Bus, make_server, wait_subscribed

UNSIGNED = "without an agent's signature"


def _unsigned_warnings(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r.args[0] for r in caplog.records if UNSIGNED in r.msg and r.levelno >= logging.WARNING]


def test_the_admins_whole_feed_is_not_told_it_gets_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``events([""])``: its SUB sends its ``""`` filter before the signed subscription
    (sorted, on connecting), which the bus took for a bare subscription and warned of."""
    caplog.set_level(logging.INFO, logger="hivemem.memory_bus.publisher")
    server, tokens = make_server()
    with server:
        bus = Bus(server, tokens)
        admin: MemoryClient = bus.client("__admin__", timeout=5.0)
        alice: MemoryClient = bus.client("alice", timeout=5.0)
        done = threading.Event()

        def keep_writing() -> None:  # until the stream has one: its subscription takes a while
            n = 0
            while not done.is_set():
                alice.write("private", "alice", NewItem(f"note {n}"), now=float(n))
                n += 1
                done.wait(0.1)

        writer = threading.Thread(target=keep_writing)
        try:
            stream = admin.events([""], timeout=10.0)
            writer.start()
            got = next(e for e in stream if e["kind"] not in (MARK, GAP))
        finally:
            done.set()
            if writer.is_alive():
                writer.join()
            admin.close()
            alice.close()
    assert (got["tier"], got["namespace"]) == ("private", "alice")
    assert _unsigned_warnings(caplog) == []


def test_a_bare_subscription_alone_is_still_told(caplog: pytest.LogCaptureFixture) -> None:
    """A plain SUB of ``""`` (no grant follows it) is still warned of, a moment later."""
    caplog.set_level(logging.INFO, logger="hivemem.memory_bus.publisher")
    server, _tokens = make_server()
    ctx = zmq.Context()
    with server:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(server.pub_address)
        try:
            deadline = time.monotonic() + 10.0
            while not _unsigned_warnings(caplog) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sock.close(linger=0)
            ctx.term()
    assert _unsigned_warnings(caplog) == [b""]


def _waiting(server: BusServer, prefix: bytes) -> bool:
    """Whether ``prefix`` is a bare subscription the server holds back, not yet told."""
    return server.inspect(lambda _: prefix in (server._publisher._bare or ()))


def test_another_bare_subscription_between_a_filter_and_its_grant_is_told_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The admin's SUB sends its ``""`` filter, then another socket's bare ``private/``
    arrives, then the admin's signed ``""``. The bus kept one bare prefix waiting, so
    ``private/`` had the admin's ``""`` told (it gets everything); only ``private/`` is."""
    caplog.set_level(logging.INFO, logger="hivemem.memory_bus.publisher")
    server, tokens = make_server()
    ctx = zmq.Context()
    with server:
        admin, plain = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
        try:
            for sock in (admin, plain):
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(server.pub_address)
            admin.setsockopt(zmq.SUBSCRIBE, b"")  # the filter, first (sorted, on connecting)
            deadline = time.monotonic() + 10.0
            while not _waiting(server, b"") and time.monotonic() < deadline:
                time.sleep(0.02)
            plain.setsockopt(zmq.SUBSCRIBE, b"private/")
            while not _waiting(server, b"private/") and time.monotonic() < deadline:
                time.sleep(0.02)
            signed = encode_subscription("__admin__", tokens["__admin__"], "")
            admin.setsockopt(zmq.SUBSCRIBE, signed)
            wait_subscribed(server, 1)
            while not _unsigned_warnings(caplog) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(MARK_PERIOD_S)  # a wrong warning of "" would come by now too
        finally:
            admin.close(linger=0)
            plain.close(linger=0)
            ctx.term()
    assert _unsigned_warnings(caplog) == [b"private/"]
