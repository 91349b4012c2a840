"""docs/protocol.md is true of a live server, as a client in another language reads it.

Each example of "Ops" (a fenced block marked ``msgpack op=<name>``) is sent as raw frames
on a DEALER, in the page's order, and the reply is held to the example's shape: its keys,
nesting and each value's type (not ids, times or counts). The error codes of the
"Error codes" table are each produced by a request and carry only the ``details`` the
table lists; each row of "Limits" is enforced with the code it names; the frame errors
are those "Frames" describes.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hivemem.memory_bus import errors
from hivemem.memory_bus.auth import new_secret
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.placement import shard_of
from hivemem.memory_bus.protocol import ADMIN_AGENT, HEADER, MAX_MESSAGE_BYTES, Code, Op
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

PAGE = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()
DIM = 8
CLIENT = 7
_ids = itertools.count(1)

# --- reading the page ---------------------------------------------------------------------

BYTES, ITEM, HIT, MORE = "<bytes>", "<item>", "<hit>", "<...>"  # never a value of the page
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_WORDS = [
    (re.compile(r"<bytes[^>]*>"), repr(BYTES)),
    (re.compile(r"\.\.\."), repr(MORE)),
    (re.compile(r"\bnull\b"), "None"),
    (re.compile(r"\btrue\b"), "True"),
    (re.compile(r"\bfalse\b"), "False"),
    (re.compile(r"\b(inf|Infinity)\b"), "1e999"),
    (re.compile(r"\bitem\b"), repr(ITEM)),
    (re.compile(r"\bhit\b"), repr(HIT)),
]


def parse(text: str) -> Any:
    """A value written as the page writes them (JSON, with ``null``, ``inf``, ``<bytes>``,
    ``item``, ``hit``, ``...`` and ``#`` comments) as a Python value with placeholders."""
    text = "\n".join(_uncommented(line) for line in text.splitlines())
    out, end = [], 0
    for match in _STRING.finditer(text):
        out += [_words(text[end : match.start()]), match.group()]
        end = match.end()
    return ast.literal_eval("".join([*out, _words(text[end:])]).strip())


def _uncommented(line: str) -> str:
    """``line`` up to its ``#`` comment, if any (a ``#`` in a string is no comment)."""
    end = 0
    for match in _STRING.finditer(line):
        if "#" in line[end : match.start()]:
            break
        end = match.end()
    return line[: line.find("#", end)] if "#" in line[end:] else line


def _words(code: str) -> str:
    for pattern, replacement in _WORDS:
        code = pattern.sub(replacement, code)
    return code


def examples() -> list[tuple[str, str, Any, Any]]:
    """(op, agent, args, result) of every marked example, in the page's order."""
    found = []
    for attrs, body in re.findall(r"```msgpack (op=.*?)\n(.*?)```", PAGE, flags=re.DOTALL):
        fields = dict(a.split("=", 1) for a in attrs.split())
        args, result = re.split(r"^→", body, maxsplit=1, flags=re.MULTILINE)
        found.append((fields["op"], fields.get("agent", "alice"), parse(args), parse(result)))
    return found


def typed_map(name: str) -> dict[str, str]:
    """The field types "Values" gives ``item`` or ``hit``: ``{"id": "int", ...}``."""
    line = re.search(rf"\*\*\w+\*\* (?:returned )?\(`{name}`\): `(\{{.*?\}})`", PAGE)
    assert line, f"Values no longer gives the fields of {name}"
    return dict(re.findall(r'"(\w+)": (\w+)', line.group(1)))


def table(heading: str) -> list[list[str]]:
    """The rows of the table under ``## heading``, as lists of cells."""
    section = PAGE.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")][2:]
    return [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]


def quoted(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


# --- shapes ---------------------------------------------------------------------------------

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bytes": bytes, "map": dict}
ID_KEYS = {"item_id", "id", "edge_id"}


class Shapes:
    """Checks replies against examples, learning which real id each example id stands for."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.item, self.hit = typed_map("item"), typed_map("hit")

    def check(self, doc: Any, real: Any, path: str = "result", key: str = "") -> None:
        if doc in (ITEM, HIT):
            self.typed(self.item if doc == ITEM else self.hit, real, path)
        elif doc == BYTES:
            assert type(real) is bytes, f"{path}: {real!r} is not bytes"
        elif isinstance(doc, dict):
            assert isinstance(real, dict), f"{path}: {real!r} is not a map"
            assert set(real) == set(doc), f"{path}: keys {sorted(real)} != {sorted(doc)}"
            for name in doc:
                self.check(doc[name], real[name], f"{path}.{name}", name)
        elif isinstance(doc, list):
            self.check_list(doc, real, path, key)
        elif doc is None:
            assert real is None, f"{path}: {real!r} is not null"
        else:
            assert type(real) is type(doc), f"{path}: {real!r} is not a {type(doc).__name__}"
            if type(doc) is int and (key in ID_KEYS or key == ""):  # "": an op's whole result
                self.ids.setdefault(doc, real)

    def check_list(self, doc: list[Any], real: Any, path: str, key: str) -> None:
        assert isinstance(real, list), f"{path}: {real!r} is not a list"
        shapes = doc[:-1] if doc and doc[-1] == MORE else doc
        if shapes is doc:
            assert len(real) == len(doc), f"{path}: {len(real)} entries, the page shows {len(doc)}"
        for i, value in enumerate(real):
            self.check(shapes[min(i, len(shapes) - 1)], value, f"{path}[{i}]", key)

    def typed(self, fields: dict[str, str], real: Any, path: str) -> None:
        assert isinstance(real, dict) and set(real) == set(fields), f"{path}: {real!r}"
        for name, kind in fields.items():
            if kind == "item":
                self.typed(self.item, real[name], f"{path}.{name}")
            else:
                assert type(real[name]) is _TYPES[kind], f"{path}.{name}: {real[name]!r}"


# --- a live bus -----------------------------------------------------------------------------


class Wire:
    """Raw frames to one server, as a client in another language sends them."""

    def __init__(self, address: str, tokens: dict[str, str]) -> None:
        self.address, self.tokens = address, tokens
        self.ctx = zmq.Context()
        self.sock = self._socket()

    def _socket(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(self.address)
        return sock

    def frames(self, frames: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
        self.sock.send_multipart(frames)
        reply = self.sock.recv_multipart()
        return reply, msgpack.unpackb(reply[-1], raw=False)

    def request(self, op: str, args: dict[str, Any], agent: str = "alice") -> dict[str, Any]:
        body = {"id": next(_ids), "client": CLIENT, "op": op, "agent": agent,
                "token": self.tokens.get(agent, "00"), "args": args}  # fmt: skip
        reply, decoded = self.frames([HEADER, msgpack.packb(body, use_bin_type=True)])
        assert reply[0] == HEADER and decoded["id"] == body["id"]
        return decoded

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def vector(seed: int, rows: int = 1) -> bytes:
    v = np.random.default_rng(seed).standard_normal((rows, DIM)).astype("<f4")
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).tobytes()


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)))
    tokens = {a: server.register(a, ["team-a"]) for a in ("alice", "bob")}
    with server:
        w = Wire(server.address, {**tokens, ADMIN_AGENT: server.admin_token})
        yield w
        w.close()


# --- the examples ---------------------------------------------------------------------------

ID_ARGS = {"item_id", "src", "dst", "edge_id", "node", "node_id"}


def materialize(value: Any, ids: dict[int, int], tokens: dict[str, str], agent: str,
                key: str = "", rows: int = 1) -> Any:  # fmt: skip
    """An example's args as sent: real vectors, tokens (``"…"``) and ids for the
    placeholders; ``agent`` is the caller of the map or row at hand."""
    if isinstance(value, dict):
        rows = len(value["text"]) if key == "columns" else rows
        if key == "columns" and "token" in value:  # a token per row, its agent's
            return {**value, "token": [tokens[a] for a in value["agent"]],
                    "vector": materialize(value["vector"], ids, tokens, agent, "vector", rows)}  # fmt: skip
        who = value.get("agent", agent)
        return {k: materialize(v, ids, tokens, who, k, rows) for k, v in value.items()}
    if isinstance(value, list):
        key = "item_id" if key == "children" else key
        return [materialize(v, ids, tokens, agent, key, rows) for v in value]
    if value == BYTES:
        return vector(len(ids), rows)
    if key == "token" and value == "…":
        return tokens[agent]
    if key in ID_ARGS and type(value) is int:
        return ids[value]
    return value


def test_the_page_gives_an_example_for_every_op_and_a_section_for_no_other() -> None:
    headings = {h.split()[0] for h in re.findall(r"^### (\w+.*)$", PAGE.split("## Ops\n")[1], re.M)}
    assert headings == {op.value for op in Op}
    assert {op for op, *_ in examples()} == {op.value for op in Op}


def test_every_example_is_what_the_server_answers(wire: Wire) -> None:
    shapes = Shapes()
    # What the examples take for granted: two graph nodes (50 and 51) in team-a, and
    # more of alice's items than a scan page of 100 holds (so that "next" is an int).
    for doc_id in (50, 51):
        reply = wire.request("write", {"tier": "graph", "namespace": "team-a",
                                       "item": {"text": f"node {doc_id}"}, "now": 1.0})  # fmt: skip
        shapes.ids[doc_id] = reply["result"]["item_id"]
    texts = [f"note {i}" for i in range(120)]
    columns = {"namespace": "alice", "text": texts}
    assert wire.request("write_many", {"tier": "private", "now": 1.0, "columns": columns})["ok"]
    for op, agent, args, result in examples():
        reply = wire.request(op, materialize(args, shapes.ids, wire.tokens, agent), agent)
        assert reply["ok"], f"{op} example: {reply['error']}"
        assert set(reply) == {"id", "ok", "result"}
        shapes.check(result, reply["result"], f"{op} result")


# --- error codes ----------------------------------------------------------------------------

WIRE_CODES = {c.value for c in Code} | {
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.HivememError) and cls.code != "not_found"
}
"""Every code a server may send: the protocol's own and its errors' (``not_found`` is the
base of the three that are sent)."""

NOT_REACHED = {
    "journal_write_failed": "a full disk: tests/integration/bus/test_full_disk.py",
    "internal": "a bug in the server",
}


def documented_codes() -> dict[str, set[str]]:
    """Each code of the "Error codes" table, with the details keys its row lists."""
    out: dict[str, set[str]] = {}
    for codes, _meaning, details in table("Error codes"):
        for code in quoted(codes):
            out[code] = quoted(details)
    return out


def test_the_error_table_lists_every_code_the_server_sends() -> None:
    assert set(documented_codes()) == WIRE_CODES
    clients = PAGE.split("## Error codes\n")[1].split("\n## ")[0].split("| `internal` |")[1]
    assert {"timeout", "shard_error"} <= quoted(clients)


@pytest.fixture(scope="module")
def odd() -> Iterator[tuple[Wire, Wire]]:
    """A bus whose shared tier has a token budget and private tier evicts by Belady's rule
    (which needs the future), and shard 0 of a bus of two, for the rarer codes."""
    secret = new_secret()
    config = StoreConfig(
        dim=DIM,
        shared=TierConfig(mode="token_budget", token_budget=10),
        private=TierConfig(capacity=1, eviction="belady"),
    )
    server = BusServer(MemoryStore(config), secret=secret)
    shard = BusServer(MemoryStore(StoreConfig(dim=DIM)).as_shard(0, 2), secret=secret)
    tokens = {"alice": server.register("alice", ["team-a"])}
    with server, shard:
        wires = Wire(server.address, tokens), Wire(shard.address, tokens)
        yield wires
        for w in wires:
            w.close()


def _errors(wire: Wire, odd: tuple[Wire, Wire]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(code, error) of one request per code that can be had on demand."""
    shared = {"tier": "shared", "namespace": "team-a"}

    def err(w: Wire, op: str, args: dict[str, Any], agent: str = "alice") -> dict[str, Any]:
        reply = w.request(op, args, agent)
        assert not reply["ok"], (op, args)
        return dict(reply["error"])

    item = wire.request("write", {**shared, "item": {"text": "x"}, "now": 1.0})["result"]["item_id"]
    yield "bad_frame", wire.frames([b"HMB2", b"\x80"])[1]["error"]
    yield "bad_request", err(wire, "get", {**shared, "item_id": item, "nw": 1.0})
    yield "unknown_op", err(wire, "pingg", {})
    yield "too_large", err(wire, "write", {**shared, "item": {"text": "a" * 32_769}, "now": 1.0})
    yield "unauthenticated", err(wire, "ping", {}, agent="mallory")
    yield "access_denied", err(wire, "scan", {"tier": "private", "namespace": "bob"})
    yield "invalid", err(wire, "search", {**shared, "vector": vector(0), "k": 1001})
    yield "dimension", err(wire, "search", {**shared, "vector": b"\0" * 12})
    yield "non_finite", err(wire, "write", {**shared, "item": {"text": "x"}, "now": math.nan})
    yield "unknown_name", err(wire, "get", {"tier": "sharedd", "namespace": "a", "item_id": 1})
    yield "item_not_found", err(wire, "get", {**shared, "item_id": 10**9})
    yield "edge_not_found", err(wire, "invalidate_edge", {"namespace": "team-a", "edge_id": 10**9, "at": 1.0})  # fmt: skip
    update = {**shared, "item_id": item, "expected_version": 9, "now": 2.0, "changes": {}}
    yield "version_conflict", err(wire, "update", update)
    body = {"id": next(_ids), "client": CLIENT, "op": "write", "agent": "alice",
            "token": wire.tokens["alice"], "args": {**shared, "item": {"text": "one"}, "now": 1.0}}  # fmt: skip
    assert wire.frames([HEADER, msgpack.packb(body)])[1]["ok"]
    body["args"]["item"] = {"text": "two"}
    yield "request_id_reused", wire.frames([HEADER, msgpack.packb(body)])[1]["error"]
    budget, shard = odd
    graph = {"tier": "graph", "namespace": "team-a", "item_id": 1}  # nothing written there
    yield "namespace_not_found", err(budget, "get", graph)
    yield "capacity", err(budget, "write", {**shared, "item": {"text": "w " * 11}, "now": 1.0})
    private = {"tier": "private", "namespace": "alice", "now": 1.0}
    yield "config", err(budget, "write", {**private, "item": {"text": "may evict"}})
    assert shard_of("alice", 2) == 1  # so not shard 0's
    yield "wrong_shard", err(shard, "get", {**private, "item_id": 1})


def test_each_documented_code_is_sent_with_the_details_the_table_lists(
    wire: Wire, odd: tuple[Wire, Wire]
) -> None:
    documented = documented_codes()
    reached = set()
    for code, error in _errors(wire, odd):
        assert error["code"] == code, error
        assert set(error["details"]) <= documented[code], (code, error["details"])
        reached.add(code)
    assert reached | set(NOT_REACHED) == set(documented)


# --- limits ---------------------------------------------------------------------------------


def _over_limits(wire: Wire) -> dict[str, list[dict[str, Any]]]:
    """One request just over each limit of the "Limits" table, and the reply's error."""
    private = {"tier": "private", "namespace": "alice"}
    graph = {"namespace": "team-a"}

    def write(item: dict[str, Any]) -> dict[str, Any]:
        return wire.request("write", {**private, "item": {"text": "", **item}, "now": 1.0})

    gnode = wire.request("write", {"tier": "graph", **graph, "item": {}, "now": 1.0})["result"]
    message = {"id": next(_ids), "client": CLIENT, "op": "write", "agent": "alice",
               "token": wire.tokens["alice"], "args": {**private, "now": 1.0,
               "item": {"meta": {"a": b"x" * MAX_MESSAGE_BYTES}}}}  # fmt: skip
    rows = [{"namespace": "alice", "item": {}}] * 4097
    return {
        "message": [wire.frames([HEADER, msgpack.packb(message)])[1]],
        "entries in a batch": [
            wire.request("write_many", {"tier": "private", "now": 1.0, "items": rows}),
            wire.request(
                "write_many",
                {
                    "tier": "private",
                    "now": 1.0,
                    "columns": {"namespace": "alice", "text": [""] * 4097},
                },
            ),
            wire.request(
                "search_many",
                {
                    "tier": "private",
                    "queries": [{"namespace": "alice", "vector": vector(0)}] * 4097,
                },
            ),
            wire.request("subscribe", {"topics": ["private/alice"] * 4097}),
        ],
        "text": [
            write({"text": "a" * 32_769}),
            wire.request("search", {**private, "text": "a" * 32_769}),
        ],
        "meta": [
            write({"meta": {str(i): i for i in range(65)}}),
            write({"meta": {"a": {"b": {"c": {"d": {"e": 1}}}}}}),
            write({"meta": {"a": "x" * 4097}}),
            write({"meta": {"a": b"x" * 4097}}),
        ],
        "msgpack while decoding": [
            write({"text": "a" * ((1 << 20) + 1)}),
            wire.request("subscribe", {"topics": ["private/alice"] * 65_537}),
            write({"meta": {str(i): 1 for i in range(4097)}}),
        ],
        "vector": [
            write({"vector": b"\0" * (DIM * 4 + 4)}),
            write({"vector": np.full(DIM, np.inf, "<f4").tobytes()}),
            write({"vector": np.full(DIM, 2e9, "<f4").tobytes()}),
        ],
        "`k`": [wire.request("search", {**private, "vector": vector(0), "k": 1001})],
        "`limit` of `scan` and `edges`": [
            wire.request("scan", {**private, "limit": 4097}),
            wire.request("edges", {**graph, "limit": 4097}),
        ],
        "`hops` of `retrieve`": [
            wire.request("retrieve", {**graph, "vector": vector(0), "hops": 7})
        ],
        "an edge's `type` (`add_edge`; `promote`'s `edge_type`)": [
            wire.request(
                "add_edge",
                {
                    **graph,
                    "src": gnode["item_id"],
                    "dst": gnode["item_id"],
                    "type": "t" * 4097,
                    "now": 1.0,
                },
            ),
            wire.request(
                "promote",
                {
                    **graph,
                    "children": [gnode["item_id"]],
                    "parent": {},
                    "edge_type": "t" * 4097,
                    "now": 1.0,
                },
            ),
        ],
    }


def test_each_limit_is_enforced_with_the_code_the_table_names(wire: Wire) -> None:
    rows = {what: refused for what, _limit, refused in table("Limits")}
    replies = _over_limits(wire)
    assert set(replies) == set(rows)
    for what, over in replies.items():
        codes = quoted(rows[what]) & WIRE_CODES
        named = re.search(r"\((.*)\)", rows[what])  # the details, where the row names them
        for reply in over:
            assert not reply["ok"], f"{what}: a request over the limit was applied"
            assert reply["error"]["code"] in codes, (what, reply["error"])
            if named:
                assert set(reply["error"]["details"]) == quoted(named.group(1)), (what, reply)


# --- frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, names_id",
    [
        ([b"HMB2", "body"], True),  # another version
        ([b"HMB1"], False),  # a missing payload
        (["body"], True),  # a missing header
        ([b"HMB1", "body", b"extra"], True),  # an extra frame
    ],
    ids=["another version", "header alone", "payload alone", "extra frame"],
)
def test_a_frame_error_is_a_bad_frame_in_version_1_with_no_details(
    wire: Wire, frames: list[Any], names_id: bool
) -> None:
    body = {"id": next(_ids), "client": CLIENT, "op": "ping", "agent": "alice",
            "token": wire.tokens["alice"], "args": {}}  # fmt: skip
    packed = msgpack.packb(body)
    reply, decoded = wire.frames([packed if f == "body" else f for f in frames])
    assert reply[0] == HEADER and len(reply) == 2
    assert decoded["error"]["code"] == "bad_frame" and decoded["error"]["details"] == {}
    assert decoded["id"] == (body["id"] if names_id else 0)
