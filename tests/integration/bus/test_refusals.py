"""Requests refused whole (undecodable, over the size limit, unsendable) get an error the
client matches to them at once, not a wait for its timeout; the server keeps serving."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import zmq
from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import (
    HivememError,
    InvalidInputError,
    TooLargeError,
    UnknownNameError,
)
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.protocol import (
    ADMIN_AGENT,
    HEADER,
    MAX_MESSAGE_BYTES,
    Reply,
    decode_reply,
    encode_request,
    pack,
)
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

from .conftest import DIM, Bus


def test_a_map_key_that_is_not_a_str_is_a_bad_frame_with_its_id(
    bus: Bus, dealer: zmq.Socket[bytes]
) -> None:
    """msgpack refuses the whole request (strict map keys); the error must carry the
    request's id, which a client otherwise cannot match, and so waits out its timeout."""
    item = {"text": "x", "meta": {5: "y"}}
    frames = encode_request(77, 1, "write", "alice", bus.tokens["alice"], {"item": item})
    dealer.send_multipart(frames)
    reply = decode_reply(dealer.recv_multipart())
    assert (reply.id, reply.ok, reply.error["code"]) == (77, False, "bad_frame")  # type: ignore[index]
    assert "map key" in reply.error["message"]  # type: ignore[index]


def test_a_client_gets_the_refusal_not_a_timeout(bus: Bus) -> None:
    with bus.client("alice", timeout=30.0, retries=2) as quick:
        with pytest.raises(HivememError) as info:
            quick.write("private", "alice", NewItem("x", meta={5: "y"}), now=0.0)  # type: ignore[dict-item]
        assert info.value.code == "bad_frame"
        with pytest.raises(InvalidInputError, match="cannot be sent") as unsent:
            quick.write("private", "alice", NewItem("x", meta={"s": {1, 2}}), now=0.0)  # type: ignore[dict-item]
        assert unsent.value.field == "item.meta.s"  # was "item": which of its fields?
        rows = [("alice", NewItem("a")), ("alice", NewItem("b", meta={"k": [1, {2}]}))]  # type: ignore[list-item]
        with pytest.raises(InvalidInputError) as unsent:
            quick.write_many("private", rows, now=0.0)
        assert unsent.value.field == "items[1].meta.k[1]"  # was "columns": which row?
        assert str(unsent.value).startswith("invalid items[1].meta.k[1]: cannot be sent: ")
        assert quick.write("private", "alice", NewItem("fine"), now=1.0).item_id > 0


def test_a_request_over_the_limit_is_refused_before_it_is_sent(alice: MemoryClient) -> None:
    """17 MB of valid rows: the server's socket would drop the message unanswered."""
    vectors = np.random.default_rng(0).standard_normal((10, DIM)).astype(np.float32)
    big = [("alice", NewItem("x" * 4000, vector=vectors[0])) for _ in range(4096)]
    with pytest.raises(TooLargeError, match="write_many request") as info:
        alice.write_many("private", big, now=0.0)  # 4,096 rows of 4 kB: 17 MB
    assert info.value.details["limit"] == MAX_MESSAGE_BYTES
    assert alice.stats()["private"]["items"] == 0
    rows = [("alice", NewItem(f"r{i}", vector=v)) for i, v in enumerate(vectors)]
    assert len(alice.write_many("private", rows, now=1.0)) == 10


def test_a_raw_message_just_over_the_limit_gets_too_large_with_its_id(
    bus: Bus, dealer: zmq.Socket[bytes]
) -> None:
    body = pack(
        {
            "id": 9,
            "client": 1,
            "op": "ping",
            "agent": "alice",
            "token": bus.tokens["alice"],
            "args": {"pad": b"\0" * MAX_MESSAGE_BYTES},
        }
    )
    dealer.send_multipart([HEADER, body])
    reply = decode_reply(dealer.recv_multipart())
    assert (reply.id, reply.error["code"]) == (9, "too_large")  # type: ignore[index]
    dealer.send_multipart(encode_request(10, 1, "ping", "alice", bus.tokens["alice"], {}))
    assert decode_reply(dealer.recv_multipart()).ok


def test_bad_arguments_are_refused_by_name_not_as_internal_errors(
    bus: Bus, alice: MemoryClient, dealer: zmq.Socket[bytes]
) -> None:
    """Each of these was an ``internal`` error, a silent drop, or (hops) a bus stalled
    for as long as the walk took."""
    node = alice.write("graph", "team", NewItem("paris"), now=0.0).item_id
    with pytest.raises(UnknownNameError, match="did you mean 'ppr'"):
        alice.retrieve("team", "paris", 3, now=None, method="ppR")
    for hops in (10**9, -1):
        with pytest.raises(InvalidInputError, match="hops"):
            alice.retrieve("team", "paris", 3, now=None, method="khop", hops=hops)
    kept = alice.write("private", "alice", NewItem("kept"), now=0.0).item_id

    def raw(req_id: int, op: str, args: dict[str, object]) -> dict[str, object]:
        dealer.send_multipart(encode_request(req_id, 1, op, "alice", bus.tokens["alice"], args))
        reply = decode_reply(dealer.recv_multipart())
        assert reply.id == req_id and not reply.ok
        return reply.error  # type: ignore[return-value]

    changes = {b"text": "x"}
    bad_key = raw(1, "update", {"tier": "private", "namespace": "alice", "item_id": kept, "expected_version": 1, "now": 1.0, "changes": changes})  # fmt: skip
    assert bad_key["code"] == "invalid" and "field names" in str(bad_key["message"])
    both = raw(2, "write_many", {"tier": "private", "now": 1.0, "items": [], "columns": {}})
    assert both["code"] == "bad_request" and "not both" in str(both["message"])
    nan = raw(3, "get", {"tier": "private", "namespace": "alice", "item_id": kept, "now": float("nan")})  # fmt: skip
    assert nan["code"] == "non_finite" and "now" in str(nan["message"])  # as the table says
    assert alice.get("private", "alice", kept).text == "kept"
    assert [h.id for h in alice.retrieve("team", "paris", 1, now=None, method="khop")] == [node]


def test_values_no_request_can_mean_are_refused(bus: Bus, alice: MemoryClient) -> None:
    """From an audit: each of these was accepted, and meant nothing or something else."""
    with pytest.raises(InvalidInputError, match="1-d"):  # went out as one 2 x 16 vector
        alice.write("private", "alice", NewItem("x", vector=np.ones((2, DIM // 2))), now=0.0)
    with pytest.raises(HivememError, match="valid_from"):  # an item never valid
        alice.write("private", "alice", NewItem("x", valid_from=float("inf")), now=0.0)
    with pytest.raises(HivememError, match="as_of"):  # as scan refused it already
        alice.search("private", "alice", np.ones(DIM), 3, now=None, as_of=float("inf"))
    with bus.client("__admin__") as admin, pytest.raises(InvalidInputError, match="empty"):
        admin.register("", ["team"])
    alice.write("graph", "team", NewItem("late", valid_from=5.0), now=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0 / 0 in the ranking warned on the server
        assert alice.retrieve("team", "late", 3, now=None, method="ppr", as_of=1.0) == []
    assert alice.stats()["private"]["items"] == 0


def test_a_request_without_its_client_number_is_refused(
    bus: Bus, dealer: zmq.Socket[bytes]
) -> None:
    """Left out, it defaulted to 0: two senders that both left it out shared retry keys,
    and the second's write (same agent, same id) got the first's reply, unapplied."""
    args = {"tier": "private", "namespace": "alice", "item": {"text": "from A"}, "now": 0.0}
    body = {"id": 500, "op": "write", "agent": "alice", "token": bus.tokens["alice"], "args": args}
    dealer.send_multipart([HEADER, pack(body)])
    reply = decode_reply(dealer.recv_multipart())
    assert (reply.id, reply.error["code"], reply.error["details"]) == (500, "bad_request", {"field": "client"})  # type: ignore[index]  # fmt: skip
    assert bus.server.inspect(lambda store: store.stats()["private"]["items"]) == 0


def test_an_extra_frame_keeps_the_request_id_and_details_carry_no_id(
    bus: Bus, dealer: zmq.Socket[bytes]
) -> None:
    frames = encode_request(6, 1, "ping", "alice", bus.tokens["alice"], {})
    dealer.send_multipart([*frames, b"x"])
    reply = decode_reply(dealer.recv_multipart())
    assert (reply.id, reply.error["code"]) == (6, "bad_frame")  # type: ignore[index]
    dealer.send_multipart(encode_request(7, 1, "search", "alice", bus.tokens["alice"], {"asof": 1}))  # fmt: skip
    reply = decode_reply(dealer.recv_multipart())
    assert reply.id == 7 and reply.error["details"] == {"field": "asof", "suggestions": ["as_of"]}  # type: ignore[index]  # fmt: skip


def test_a_bad_row_of_a_batch_is_named_by_its_index(bus: Bus, alice: MemoryClient) -> None:
    ok = {"namespace": "alice", "item": {"text": "fine"}}
    cases = [
        ({"namespace": "alice", "item": {"text": 5}}, "bad_request", "items[1].text"),
        ({"namespace": 7, "item": {"text": "x"}}, "bad_request", "items[1].namespace"),
        (
            {"namespace": "alice", "item": {"text": "x", "meta": {"s": "y" * 5000}}},
            "too_large",
            "items[1].meta.s",
        ),
        ({"namespace": "bob", "item": {"text": "x"}}, "access_denied", None),
    ]
    for n, (row, code, field) in enumerate(cases):
        frames = encode_request(n + 1, 1, "write_many", "alice", bus.tokens["alice"], {"tier": "private", "items": [ok, row], "now": 0.0})  # fmt: skip
        with zmq.Context.instance().socket(zmq.DEALER) as sock:
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.connect(bus.server.address)
            sock.send_multipart(frames)
            error = decode_reply(sock.recv_multipart()).error
        assert error is not None and (error["code"], error["details"].get("field")) == (code, field), error  # fmt: skip
        assert error["details"]["row"] == 1
        if field is not None:
            assert field in error["message"]
        else:
            assert "(items[1])" in error["message"]
    assert alice.stats()["private"]["items"] == 0


def test_an_unknown_field_to_update_gets_a_suggestion(alice: MemoryClient) -> None:
    item_id = alice.write("private", "alice", NewItem("a"), now=0.0).item_id
    with pytest.raises(InvalidInputError, match="did you mean 'text'") as info:
        alice.update("private", "alice", item_id, expected_version=1, now=1.0, txt="b")
    assert info.value.details["suggestions"] == ["text"]


@pytest.mark.parametrize("snapshot_every", [1, 100_000], ids=["snapshot", "log-only"])
def test_a_resent_refusal_is_decided_afresh_live_and_after_a_restart(
    tmp_path: Path, snapshot_every: int
) -> None:
    """A refusal's journal record is taken back, so a restart from the log alone could not
    remember it: the resend was applied there, and refused again live or after a snapshot."""
    secret = b"s" * 32
    frames = encode_request(
        1, 4242, "write", "carol", token_for(secret, "carol"),
        {"tier": "shared", "namespace": "ops", "item": {"text": "deploy"}, "now": 0.0},
    )  # fmt: skip

    def send(server: BusServer) -> Reply:
        with zmq.Context.instance().socket(zmq.DEALER) as sock:
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.connect(server.address)
            sock.send_multipart(frames)
            return decode_reply(sock.recv_multipart())

    store = MemoryStore(StoreConfig(dim=DIM))
    with BusServer(store, secret=secret, journal=Journal(tmp_path, "always"), snapshot_every=snapshot_every) as server:  # fmt: skip
        assert send(server).error["code"] == "access_denied"  # type: ignore[index]
        assert send(server).error["code"] == "access_denied"  # type: ignore[index]
        server.handle(encode_request(2, 1, "register", ADMIN_AGENT, server.admin_token, {"agent_id": "carol", "groups": ["ops"]}))  # fmt: skip
        server.handle(encode_request(3, 1, "write", ADMIN_AGENT, server.admin_token, {"tier": "private", "namespace": ADMIN_AGENT, "item": {"text": "x"}, "now": 0.0}))  # fmt: skip
    with BusServer(MemoryStore(StoreConfig(dim=DIM)), secret=secret, journal=Journal(tmp_path, "always")) as again:  # fmt: skip
        first = send(again)
        assert first.ok, first.error
        assert send(again).result == first.result  # applied once, remembered from then on
        assert again.inspect(lambda s: s.stats()["shared"]["items"]) == 1


def test_a_single_request_names_its_own_fields(alice: MemoryClient) -> None:
    """A single write was refused as ``items[0].valid_to``, a search as ``queries[0].vector``:
    names of a batch the request never sent."""
    with pytest.raises(InvalidInputError) as info:
        alice.write("private", "alice", NewItem("x", valid_from=5.0, valid_to=1.0), now=0.0)
    assert info.value.details["field"] == "item.valid_to" and "row" not in info.value.details
    with pytest.raises(HivememError) as found:
        alice.search("private", "alice", np.ones(DIM + 1, dtype=np.float32), now=None)
    assert found.value.details["field"] == "vector"


def test_a_bad_query_of_search_many_is_named_by_its_row(bus: Bus) -> None:
    """A query's k, as_of or access was refused as ``k`` (or the namespace) alone: the
    caller of a batch of thousands could not tell which query."""
    vector = np.ones(DIM, np.float32)
    with bus.client("alice", timeout=5.0) as alice:
        fine = ("alice", vector, 3)
        with pytest.raises(InvalidInputError) as caught:
            alice.search_many("private", [fine, fine, ("alice", vector, 0)], now=None)
        assert caught.value.details["field"] == "queries[2].k"
        assert caught.value.details["row"] == 2
        with pytest.raises(HivememError, match=r"\(queries\[1\]\)$") as denied:
            alice.search_many("private", [fine, ("bob", vector, 3)], now=None)
        assert denied.value.code == "access_denied" and denied.value.details["row"] == 1


@pytest.mark.parametrize(
    "op, args, field",
    [
        (
            "write_many",
            {"tier": "private", "now": 0.0, "items": [{"namespace": "alice"}] * 4097},
            "items",
        ),
        (
            "write_many",
            {"tier": "private", "now": 0.0, "columns": {"text": [""] * 4097}},
            "columns.text",
        ),
        ("search_many", {"tier": "private", "queries": [{"namespace": "alice"}] * 4097}, "queries"),
        ("subscribe", {"topics": ["private/alice"] * 4097}, "topics"),
    ],
)
def test_a_batch_over_the_limit_names_its_field_and_length(
    bus: Bus, dealer: zmq.Socket[bytes], op: str, args: dict[str, object], field: str
) -> None:
    """As a text or a meta over its limit does (docs/protocol.md, "Limits"): the error named
    only the limit, so a client's ``TooLargeError.field`` was empty."""
    dealer.send_multipart(encode_request(5, 1, op, "alice", bus.tokens["alice"], args))
    reply = decode_reply(dealer.recv_multipart())
    assert reply.error is not None and reply.error["code"] == "too_large"
    assert reply.error["details"] == {"field": field, "limit": 4096, "got": 4097}
