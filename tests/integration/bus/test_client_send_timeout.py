"""A request whose send cannot be queued ends with the client's timeout.

A DEALER with no connection to queue a message on blocks its send; the blocking client
sent without a timeout, and a test's client whose CURVE handshake the server had refused
hung there for 300 s on a loaded machine. That refusal comes too late to be caught at will,
so the client's sockets are made here with ``ZMQ_IMMEDIATE`` (queue only on a finished
connection), connected where nothing listens: real sockets whose sends cannot queue.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import zmq
from hivemem.memory_bus import transport
from hivemem.memory_bus.client import AsyncMemoryClient, BusTimeoutError, MemoryClient
from hivemem.memory_bus.testing.server_process import free_port


def _queueing_nowhere(ctx: Any, kind: int, address: str, curve: Any, *args: Any, **kw: Any) -> Any:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.connect(address)
    return sock


def _ping_blocking(address: str) -> None:
    with MemoryClient(address, "alice", "00", timeout=0.3, retries=1) as client:
        client.ping()


def _ping_async(address: str) -> None:
    async def ping() -> None:
        async with AsyncMemoryClient(address, "alice", "00", timeout=0.3, retries=1) as client:
            await client.ping()

    asyncio.run(ping())


@pytest.mark.parametrize("ping", [_ping_blocking, _ping_async], ids=["blocking", "async"])
def test_a_send_that_cannot_queue_ends_with_the_timeout(
    ping: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "connected", _queueing_nowhere)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            ping(f"tcp://127.0.0.1:{free_port()}")
        except BaseException as exc:  # the outcome is the test's
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=30)  # a hang, not a speed: its attempts take 0.6 s in all
    assert not caller.is_alive(), "the send held the call past its timeout"
    assert len(outcome) == 1 and isinstance(outcome[0], BusTimeoutError), outcome
