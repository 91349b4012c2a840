"""A field of the wrong type gets the same answer in every form a request can take.

An item's fields reach the server in four forms: ``write``'s ``item``, a ``write_many``
row, a ``write_many`` column and ``promote``'s ``parent``. Rows and single items are
type-checked by the request decoder, columns by the store: both must answer
``bad_request`` and name the field where it is (``item.text``, ``items[0].text``,
``parent.text``). Columns used to answer ``invalid``, and a row's vector was named
``items[0].item.vector``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.config import GraphConfig, StoreConfig
from hivemem.memory_bus.protocol import decode_reply, encode_request
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 4
VECTOR = np.ones(DIM, np.float32).tobytes()

WRONG = [
    ("text", 5),
    ("text", b"x"),
    ("text", ["x"]),
    ("meta", 5),
    ("meta", "x"),
    ("meta", [1]),
    ("importance", "x"),
    ("importance", True),
    ("valid_from", "x"),
    ("valid_from", False),
    ("valid_to", "x"),
    ("level", "x"),
    ("level", 1.5),
]


@pytest.fixture(scope="module")
def ask() -> Iterator[Any]:
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, graph=GraphConfig(capacity=100))))
    token = server.register("alice", ["team"])
    ids = itertools.count(1)
    ctx = zmq.Context()
    with server:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(server.address)

        def call(op: str, args: dict[str, Any]) -> tuple[str, Any] | Any:
            sock.send_multipart(encode_request(next(ids), 7, op, "alice", token, args))
            reply = decode_reply(sock.recv_multipart())
            if reply.ok:
                return reply.result
            assert reply.error is not None
            return reply.error["code"], reply.error["details"].get("field")

        try:
            yield call
        finally:
            sock.close(linger=0)
            ctx.term()


@pytest.mark.parametrize(("name", "value"), WRONG)
def test_a_wrong_type_is_bad_request_named_where_it_is(ask: Any, name: str, value: Any) -> None:
    item = {"text": "x", "vector": VECTOR, name: value}
    write = ask("write", {"tier": "graph", "namespace": "team", "item": item, "now": 0.0})
    rows = ask(
        "write_many",
        {"tier": "graph", "now": 0.0, "items": [{"namespace": "team", "item": item}]},
    )
    columns = {"namespace": "team", "text": ["x"], "vector": VECTOR, name: [value]}
    columns = ask("write_many", {"tier": "graph", "now": 0.0, "columns": columns})
    parent = ask("promote", {"namespace": "team", "children": [], "parent": item, "now": 0.0})
    assert write == ("bad_request", f"item.{name}")
    assert rows == columns == ("bad_request", f"items[0].{name}")
    assert parent == ("bad_request", f"parent.{name}")
    assert ask("scan", {"tier": "graph", "namespace": "team"})["items"] == []  # nothing written


@pytest.mark.parametrize("value", ["x", 5, [1.0] * DIM, b"abc"])
def test_a_vector_of_the_wrong_type_is_named_as_the_other_fields_are(ask: Any, value: Any) -> None:
    item = {"text": "x", "vector": value}
    assert ask("write", {"tier": "graph", "namespace": "team", "item": item, "now": 0.0}) == (
        "bad_request",
        "item.vector",
    )
    rows = {"tier": "graph", "now": 0.0, "items": [{"namespace": "team", "item": item}]}
    assert ask("write_many", rows) == ("bad_request", "items[0].vector")
    columns = {"namespace": "team", "text": ["x"], "vector": value}  # one column for all rows
    assert ask("write_many", {"tier": "graph", "now": 0.0, "columns": columns}) == (
        "bad_request",
        "columns.vector",
    )


def test_a_value_the_data_model_refuses_is_still_named_where_it_is(ask: Any) -> None:
    """The same placing holds for a value of the right type that the store refuses."""
    item = {"text": "x", "vector": VECTOR, "valid_from": 5.0, "valid_to": 1.0}
    assert ask("write", {"tier": "graph", "namespace": "team", "item": item, "now": 0.0}) == (
        "invalid",
        "item.valid_to",
    )
    nan = {"text": "x", "vector": VECTOR, "importance": float("nan")}
    assert ask("write", {"tier": "graph", "namespace": "team", "item": nan, "now": 0.0}) == (
        "non_finite",
        "item.importance",
    )
    rows = {"tier": "graph", "now": 0.0, "items": [{"namespace": "team", "item": nan}]}
    assert ask("write_many", rows) == ("non_finite", "items[0].importance")
    good = {"tier": "graph", "namespace": "team", "item": {"text": "kept", "vector": VECTOR}}
    assert ask("write", {**good, "now": 0.0})["op"] == "ADD"  # still serving
