"""The ZeroMQ sockets a client opens, and the keys it opens them with.

:func:`client_context` is the one ZeroMQ context a process's clients share (never
terminated: see there why); :func:`connected` makes a socket connected with linger 0,
CURVE keys if given and a SUB's subscriptions made before it connects;
:func:`subscribed` is an event stream over such a SUB, whose socket a closing client can
close first; :func:`curve_keys` reads a client's keys from certificate files. The
transports of :mod:`hivemem.memory_bus.transport` use them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from hivemem.memory_bus.errors import HivememError


def curve_keys(secret_certificate: str | Path, server_certificate: str | Path) -> dict[str, bytes]:
    """A client's ``curve`` keys from certificate files made by ``zmq.auth.create_certificates``.

    Args:
        secret_certificate: The client's ``.key_secret`` file (its public and secret key).
        server_certificate: The bus's ``.key`` file (its public key).

    Raises:
        HivememError: A file that cannot be read or holds no such key.
    """
    from zmq.auth import load_certificate

    try:
        public, secret = load_certificate(secret_certificate)
        server_public, _ = load_certificate(server_certificate)
    except (OSError, ValueError) as exc:
        raise HivememError(f"cannot load a CURVE certificate: {exc}") from exc
    if secret is None:
        raise HivememError(f"{secret_certificate} holds no secret key (give the .key_secret file)")
    return {"public": public, "secret": secret, "server": server_public}


def client_context() -> zmq.asyncio.Context:
    """The process's one asyncio ZeroMQ context, which every client's sockets share.

    A context of its own per client was terminated by its finalizer when an unclosed
    client became garbage, and a garbage collection then hung for ever: the collector
    clears the weak references the context keeps of its sockets before it runs
    finalizers, so ``term()`` waited for sockets it could no longer see (an exception
    leaving ``asyncio.run`` with a sharded client's event streams open did it). The
    shared context is never terminated; a client closes its own sockets (linger 0), and
    an unclosed one's sockets close with them. It is remade in a forked child.
    """
    return zmq.asyncio.Context.instance()


def blocking_context() -> zmq.Context[Any]:
    """The process's one plain ZeroMQ context, for blocking clients (see :func:`client_context`)."""
    return zmq.Context.instance()


def connected(
    ctx: zmq.Context[Any],
    kind: int,
    address: str,
    curve: dict[str, bytes] | None,
    subscriptions: Sequence[bytes] = (),
    hwm: int | None = None,
) -> Any:
    """A socket of ``kind`` connected to ``address``: linger 0, CURVE keys if given,
    (for a SUB) ``subscriptions`` made before it connects, and queues of ``hwm``
    messages each way (None: ZeroMQ's default)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    if "[" in address:  # an IPv6 address (tcp://[::1]:7777): ZeroMQ connects only if told
        sock.setsockopt(zmq.IPV6, 1)
    try:
        if curve:
            sock.curve_secretkey, sock.curve_publickey = curve["secret"], curve["public"]
            sock.curve_serverkey = curve["server"]
        for prefix in subscriptions:
            sock.setsockopt(zmq.SUBSCRIBE, prefix)
        sock.connect(address)
    except zmq.ZMQError:
        sock.close()
        raise
    return sock


async def subscribed(
    ctx: zmq.asyncio.Context,
    address: str,
    curve: dict[str, bytes] | None,
    subscriptions: list[bytes],
    open_now: set[zmq.asyncio.Socket] | None = None,
) -> AsyncGenerator[list[bytes], None]:
    """The frames of each message a SUB socket at ``address`` receives, once it has sent
    ``subscriptions``; the socket is closed when the iteration ends (and is in
    ``open_now`` meanwhile, for a closing client to close first).

    Raises:
        HivememError: ``address`` is one ZeroMQ cannot connect to (a malformed one, an
            unknown transport), or the client is closed.
    """
    try:
        sock = connected(ctx, zmq.SUB, address, curve, subscriptions)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.ETERM:  # its client closed the context
            raise HivememError("client is closed") from exc
        raise HivememError(f"cannot subscribe to the event socket at {address!r}: {exc}") from exc
    held = open_now if open_now is not None else set()
    held.add(sock)
    try:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError as exc:  # its client closed the context under it
                raise HivememError("client is closed") from exc
            except asyncio.CancelledError:
                if sock.closed and not cancelling():  # its client closed the socket
                    raise HivememError("client is closed") from None
                raise
            yield frames
    finally:
        held.discard(sock)
        sock.close(linger=0)


def cancelling() -> bool:
    """Whether the running task is being cancelled (by its caller, not by a closed socket)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
