"""What the clients make of arguments of the wrong type, and of the errors a server
returns (real server, real sockets; from an audit of the clients)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.client import AsyncMemoryClient, MemoryClient
from hivemem.memory_bus.errors import (
    DimensionMismatchError,
    InvalidInputError,
    UnknownNameError,
)
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import ProtocolError
from hivemem.memory_bus.store import MemoryStore

from .conftest import Bus


def test_a_str_where_a_list_of_names_is_expected_is_refused(bus: Bus) -> None:
    """``groups="team"`` registered the groups a, e, m and t; a topic str was split into
    one-letter topics."""
    admin = bus.client("__admin__", timeout=5.0)
    try:
        with pytest.raises(InvalidInputError) as caught:
            admin.register("carol", groups="team")  # type: ignore[arg-type]
        assert caught.value.field == "groups"
        assert "carol" not in bus.server.inspect(lambda _: dict(bus.server.registry.agents))
        assert admin.register("carol", groups=["team"])["token"]
        for call in (
            lambda: admin.subscribe("private/alice"),
            lambda: next(admin.events("private/alice", timeout=0.2), None),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidInputError) as caught:
                call()
            assert caught.value.field == "topics"
    finally:
        admin.close()


def test_errors_from_a_reply_carry_their_class_attributes(alice: MemoryClient) -> None:
    """Rebuilt without ``__init__``, they lacked ``field`` and ``suggestions``."""
    with pytest.raises(DimensionMismatchError) as dimension:
        alice.search("private", "alice", np.zeros(3, np.float32), k=1, now=None)
    assert dimension.value.field == "vector"
    with pytest.raises(InvalidInputError) as invalid:
        alice.search("private", "alice", "q", k=5000, now=None)
    assert invalid.value.field == "k"
    with pytest.raises(UnknownNameError) as unknown:
        alice.write("privat", "alice", NewItem("x"), now=0.0)
    assert unknown.value.suggestions == ["private"]


WRONG: dict[str, tuple[str, Callable[[MemoryClient], Any]]] = {
    "write(item=str)": ("item", lambda c: c.write("private", "alice", "text", now=0.0)),
    "write_many([NewItem])": (
        "entries[0]",
        lambda c: c.write_many("private", [NewItem("a")], now=0.0),
    ),
    "write_many([(ns, str)])": (
        "entries[1]",
        lambda c: c.write_many("private", [("alice", NewItem("a")), ("alice", "b")], now=0.0),
    ),
    "write_many(behalf=str)": (
        "entries[0]",
        lambda c: c.write_many("private", [("alice", NewItem("a"), "bob")], now=0.0),
    ),
    "search_many([(ns, text)])": (
        "queries[0]",
        lambda c: c.search_many("private", [("alice", "x")], now=None),
    ),
    "search_many([str])": (
        "queries[0]",
        lambda c: c.search_many("private", ["x"], now=None),
    ),
    "promote(parent=str)": ("parent", lambda c: c.promote("team", [1], "p", now=0.0)),
    "update(meta={set})": (
        "changes.meta.a",  # where the set is, not only the argument
        lambda c: c.update("private", "alice", 1, expected_version=1, now=1.0, meta={"a": {1}}),
    ),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_argument_type_is_refused_by_name_before_sending(bus: Bus, case: str) -> None:
    """They raised AttributeError, TypeError or IndexError, or named no argument."""
    field, call = WRONG[case]
    with bus.client("alice", timeout=5.0) as client:
        with pytest.raises(InvalidInputError) as caught:
            call(client)
        assert caught.value.field == field
        assert bus.server.inspect(MemoryStore.stats)["private"]["items"] == 0
        assert client.ping()["agent"] == "alice"


def test_a_plain_value_of_the_wrong_type_is_refused_by_the_bus_by_name(
    alice: MemoryClient,
) -> None:
    """What the README says of those the client does not check itself (k, now)."""
    for field, call in (
        ("k", lambda: alice.search("private", "alice", "x", k="3", now=None)),  # type: ignore[arg-type]
        ("now", lambda: alice.write("private", "alice", NewItem("x"), now="0")),  # type: ignore[arg-type]
    ):
        with pytest.raises(ProtocolError) as caught:
            call()
        assert (caught.value.code, caught.value.details["field"]) == ("bad_request", field)


def test_numpy_numbers_are_sent_as_python_numbers(alice: MemoryClient) -> None:
    """An id or k taken from an array was "cannot serialize numpy.int64"."""
    meta = {"score": np.float32(0.5), "rank": np.int16(3)}
    written = alice.write("private", "alice", NewItem("x", meta=meta), now=np.float64(0.0))
    item = alice.get("private", "alice", np.int64(written.item_id))
    assert item.text == "x" and item.meta == {"score": 0.5, "rank": 3}
    assert [h.id for h in alice.search("private", "alice", "x", k=np.int64(1), now=None)] == [
        written.item_id
    ]


@dataclasses.dataclass
class Proposal:
    """A caller's own item class: ``NewItem``'s fields, not a ``NewItem``."""

    text: str
    vector: Any = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    importance: float = 0.5
    valid_from: float | None = None
    valid_to: float = math.inf
    level: int = 0


def test_inputs_that_worked_before_the_type_checks_still_work(bus: Bus) -> None:
    """The checks of argument types refused queries and entries given as a generator,
    an item of the caller's own class with NewItem's fields, and numpy's retries."""
    vector = np.ones(32, np.float32)
    with bus.client("alice", timeout=np.float32(5), retries=np.int64(1)) as client:
        written = client.write("private", "alice", Proposal("duck"), now=0.0)
        assert client.get("private", "alice", written.item_id).importance == 0.5
        many = client.write_many(
            "private", (("alice", Proposal(f"duck {i}")) for i in range(2)), now=0.0
        )
        texts = [client.get("private", "alice", r.item_id).text for r in many]
        assert texts == ["duck 0", "duck 1"]
        hits = client.search_many("private", (("alice", vector, 2) for _ in range(3)), now=None)
        assert [len(h) for h in hits] == [2, 2, 2]
    numpy_patience = AsyncMemoryClient(
        "tcp://127.0.0.1:1", timeout=np.float32(2), retries=np.int64(3)
    )
    requests = numpy_patience._transport.requests  # type: ignore[attr-defined]
    numpy_patience.close()
    assert type(requests.retries) is int and requests.attempts == 4
    assert type(requests.timeout) is float and requests.timeout == 2.0


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.search_many("private", "alice", now=None),
        lambda c: c.search_many("private", 3, now=None),
        lambda c: c.write_many("private", "alice", now=0.0),
        lambda c: c.write("private", "alice", {"text": "not an item"}, now=0.0),
    ],
)
def test_what_is_no_batch_or_item_is_still_refused_by_name(bus: Bus, call: Any) -> None:
    with bus.client("alice", timeout=5.0) as client:
        with pytest.raises(InvalidInputError) as caught:
            call(client)
        assert caught.value.field in {"queries", "entries", "item", "entries[0]", "queries[0]"}


def test_curve_keys_missing_are_named() -> None:
    """A curve map without its secret and server keys was a KeyError at the first call."""
    with pytest.raises(InvalidInputError) as caught:
        AsyncMemoryClient("tcp://127.0.0.1:1", "a", "t", curve={"public": b"x" * 40})
    assert caught.value.field == "curve" and "secret" in str(caught.value)
    with pytest.raises(InvalidInputError, match="curve"):
        MemoryClient("tcp://127.0.0.1:1", "a", "t", curve={"public": b"x" * 40})
