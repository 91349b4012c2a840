"""10,000 malformed inputs: every one answered with an error, the server keeps serving, nothing lost."""

from __future__ import annotations

import zmq
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.testing.fuzz import fuzz, inputs

from .conftest import DIM, Bus


def test_fuzz_keeps_the_server_serving(
    bus: Bus, alice: MemoryClient, dealer: zmq.Socket[bytes]
) -> None:
    acked = {
        alice.write("shared", "team", NewItem(f"fact {i}", meta={"n": i}), now=float(i)).item_id: i
        for i in range(20)
    }
    counts = fuzz(dealer, inputs(10_000, seed=0, agent="alice", token=bus.tokens["alice"], dim=DIM))
    assert sum(counts.values()) == 10_000  # every input got a reply
    assert counts.get("internal", 0) == 0, counts  # no input reached an unhandled exception
    assert {"bad_frame", "bad_request", "unknown_op", "unauthenticated", "non_finite"} <= set(
        counts
    ), counts
    assert alice.ping()["version"] == 1
    for item_id, n in acked.items():
        assert alice.get("shared", "team", item_id).meta == {"n": n}
