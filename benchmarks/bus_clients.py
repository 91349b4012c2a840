"""The client side of ``benchmarks/bus.py``: what each worker process sends, and the
worker processes themselves.

Each target is driven by the same loop (:func:`run_for`) around one op: raw protocol
frames on a DEALER (:func:`raw_op`), the ``MemoryClient`` library (:func:`client_op`), or
redis-py ``SET``s of the same payload (:func:`redis_op`). A worker process keeps its
connections open between slices (:class:`Workers`), so connecting is never timed.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from contextlib import ExitStack
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import numpy as np
import zmq
from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient, encode_write_entries
from hivemem.memory_bus.codec import encode_new_item
from hivemem.memory_bus.forking import die_with_parent
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import encode_request

DIM = 384
BATCH = 64
AGENTS = 100  # agents (private namespaces) each worker writes as, in turn
SECRET = b"benchmark-secret"
TEXT = "agent 17 saw the red key under the third door at noon"


def new_item(seed: int) -> NewItem:
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return NewItem(TEXT, vector=vec / np.linalg.norm(vec))


def item_payload(seed: int) -> dict[str, Any]:
    return encode_new_item(new_item(seed))


def agents_of(worker: str) -> list[tuple[str, str]]:
    """The (agent id, token) pairs a worker writes as."""
    return [(f"{worker}a{i}", token_for(SECRET, f"{worker}a{i}")) for i in range(AGENTS)]


def run_for(seconds: float, op: Callable[[], None]) -> list[float]:
    """Call ``op`` until ``seconds`` pass; return each call's latency."""
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            return lat
        op()
        lat.append(time.perf_counter() - t0)


def raw_op(address: str, agent: str, batch: bool, stack: ExitStack) -> Callable[[], None]:
    """One request at a time as raw protocol frames on a DEALER, agents in turn."""
    ctx = zmq.Context()
    stack.callback(ctx.term)
    sock = ctx.socket(zmq.DEALER)
    stack.callback(sock.close, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    item = new_item(1)
    requests = []  # (agent, token, args) for each agent, sent in turn
    for name, token in agents_of(agent):
        args: dict[str, Any] = (
            {"tier": "private", "now": 0.0, "columns": encode_write_entries([(name, item)] * BATCH)}
            if batch
            else {"tier": "private", "namespace": name, "item": encode_new_item(item), "now": 0.0}
        )  # fmt: skip
        requests.append((name, token, args))
    op_name = "write_many" if batch else "write"
    counter = iter(range(1, 1 << 62))
    client = int.from_bytes(agent.encode()[:7].ljust(7, b"\0"), "little")

    def op() -> None:
        n = next(counter)
        name, token, args = requests[n % AGENTS]
        sock.send_multipart(encode_request(n, client, op_name, name, token, args))
        sock.recv_multipart()

    return op


def client_op(address: str, agent: str, batch: bool, stack: ExitStack) -> Callable[[], None]:
    """The same writes through the ``MemoryClient`` library."""
    item = new_item(1)
    client = stack.enter_context(MemoryClient(address))
    handles = [(name, client.as_agent(name, token)) for name, token in agents_of(agent)]
    turn = iter(range(1 << 62))

    def op() -> None:
        name, handle = handles[next(turn) % AGENTS]
        if batch:
            handle.write_many("private", [(name, item)] * BATCH, now=0.0)
        else:
            handle.write("private", name, item, now=0.0)

    return op


def redis_op(port: str, agent: str, batch: bool, stack: ExitStack) -> Callable[[], None]:
    """SET of the same payload with redis-py; a batch is a pipeline of 64 SETs."""
    import redis

    conn = redis.Redis(port=int(port))
    stack.callback(conn.close)
    payload = msgpack.packb(item_payload(1))
    keys = iter(range(1 << 62))

    def single() -> None:
        conn.set(f"{agent}:{next(keys)}", payload)

    def pipelined() -> None:
        pipe = conn.pipeline(transaction=False)
        for _ in range(BATCH):
            pipe.set(f"{agent}:{next(keys)}", payload)
        pipe.execute()

    return pipelined if batch else single


OPS = {"raw": raw_op, "client": client_op, "redis": redis_op}


def worker_main(conn: Connection, name: str) -> None:
    """A client process: runs slices as the driver asks, keeping its connections open.

    Each message is ``(kind, address, batch, seconds)``; the reply is the slice's
    latencies. ``None`` ends the worker.
    """
    die_with_parent()  # a driver killed outright would leave it waiting for a reply for ever
    ops: dict[tuple[str, str, bool], Callable[[], None]] = {}
    with ExitStack() as stack:
        while (task := conn.recv()) is not None:
            kind, address, batch, seconds = task
            key = (kind, address, batch)
            if key not in ops:  # connected (and its agents registered) outside the timing
                ops[key] = OPS[kind](address, f"{name}x{len(ops)}", batch, stack)
            conn.send(run_for(seconds, ops[key]))


class Workers:
    """``n`` client processes started once, each with a pipe from the driver."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for i in range(n):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(theirs, f"w{i}"), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)

    def run(self, procs: int, task: tuple[str, str, bool, float]) -> list[list[float]]:
        """Run ``task`` on the first ``procs`` workers at once; each one's latencies."""
        for pipe in self.pipes[:procs]:
            pipe.send(task)
        return [pipe.recv() for pipe in self.pipes[:procs]]

    def close(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            pipe.send(None)
            proc.join(timeout=10)
