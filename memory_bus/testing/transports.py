"""The transport contract: a client over any transport answers as over the bus's socket.

:func:`check_transport` is the check a user runs over a transport of their own (one that
carries the protocol's frames some other way: a Ray channel, a pipe, a test double of a
remote bus). It runs one session of calls, every kind of op, refusals and errors
included, through a :class:`~hivemem.memory_bus.client.MemoryClient` over the transport
and through one over the bus's own ZeroMQ socket, each against a fresh server, and
compares what they return and raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.interfaces import Transport
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.failures import ContractFailure, expect

DIM = 16


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _raised(call: Callable[[], Any]) -> str:
    """The name of the exception ``call()`` raises ("" if none)."""
    try:
        call()
    except Exception as exc:  # the check compares which, not whether
        return type(exc).__name__
    return ""


def session(client: MemoryClient, admin: MemoryClient) -> list[Any]:
    """One call of every kind through ``client`` (acting as ``alice``, in group ``team``
    but not ``rivals``) and ``admin`` (the same connection as the administrator); what
    each returned or raised, in a comparable form."""
    out: list[Any] = []
    item = NewItem("the vault code is 4417", vector=_vec(1), meta={"key": "vault"})
    first = client.write("private", "alice", item, now=0.0)
    entries = [("alice", NewItem(f"note {i}", vector=_vec(10 + i))) for i in range(4)]
    many = client.write_many("private", entries, now=1.0)
    out.append([first.op, *(r.op for r in many)])
    hits = client.search("private", "alice", _vec(1), k=3, now=2.0)
    out.append([(h.item.text, round(h.score, 5)) for h in hits])
    queries = [("alice", _vec(11), 2), ("alice", _vec(12), 2)]
    out.append([[h.item.text for h in q] for q in client.search_many("private", queries, now=3.0)])
    got = client.get("private", "alice", first.item_id)
    out.append((got.text, got.meta, got.version))
    new = client.update("private", "alice", first.item_id, expected_version=1, now=4.0, text="44")
    out.append((new.text, new.version))

    def stale() -> Any:  # version 1 is gone
        return client.update("private", "alice", first.item_id, expected_version=1, now=5.0)

    out.append(_raised(stale))
    client.delete("private", "alice", many[0].item_id, now=6.0)
    out.append(_raised(lambda: client.get("private", "alice", many[0].item_id)))
    out.append([h["version"] for h in client.history("private", "alice", first.item_id)])
    out.append(_raised(lambda: client.search("private", "bob", _vec(1), k=1, now=7.0)))
    out.append(_raised(lambda: client.write("shared", "rivals", NewItem("hi"), now=7.0)))
    out.append(_raised(lambda: client.write("private", "alice", NewItem("x" * 40_000), now=7.0)))
    out.append(_raised(lambda: client.write("nowhere", "alice", NewItem("x"), now=7.0)))
    out.append(client.write("shared", "team", NewItem("team fact"), now=8.0).op)
    later = client.nowait().search("shared", "team", _vec(5), k=2, now=9.0)
    out.append([h.item.text for h in later.result(timeout=10)])
    # pub: its port; epoch: each bus's own
    out.append({k: v for k, v in client.ping().items() if k not in ("pub", "epoch")})
    stats = admin.stats()
    out.append((stats["private"]["items"], stats["shared"]["items"]))
    return out


def _server() -> tuple[BusServer, dict[str, str]]:
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)))
    alice = server.register("alice", ["team"])
    server.register("bob", ["rivals"])
    return server.start(), {"alice": alice, ADMIN_AGENT: server.admin_token}


def check_transport(make: Callable[[BusServer], Transport]) -> None:
    """Raise ``ContractFailure`` unless a client over ``make(server)`` answers
    :func:`session` as a client over the server's ZeroMQ socket does.

    Args:
        make: Makes the transport to a started server (called once, with a fresh one).
    """
    answers = []
    for own in (False, True):
        server, tokens = _server()
        try:
            client = (
                MemoryClient(agent="alice", token=tokens["alice"], transport=make(server))
                if own
                else MemoryClient(server.address, "alice", tokens["alice"], timeout=10.0)
            )
            try:
                answers.append(session(client, client.as_agent(ADMIN_AGENT, tokens[ADMIN_AGENT])))
            except Exception as exc:
                if not own:
                    raise
                raise ContractFailure(f"the session failed over the transport: {exc!r}") from exc
            finally:
                client.close()
        finally:
            server.stop()
    for i, (want, got) in enumerate(zip(*answers, strict=True)):
        expect(got == want, f"call {i}: {got!r} over the transport, {want!r} over the socket")
