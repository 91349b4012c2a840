"""The bus wire format: every constant and frame in one place.

Frames (ZeroMQ multipart messages)::

    client DEALER -> server ROUTER   [HEADER, request]
    server ROUTER receives           [identity, HEADER, request]   (identity added by ZeroMQ)
    server ROUTER -> client DEALER   [identity, HEADER, reply]      (client sees [HEADER, reply])
    server XPUB                      [topic, HEADER, events]        topic = event_topic(...)

``HEADER`` names the protocol and its version (``b"HMB1"``). Payloads are msgpack maps:

    request  {"id": int, "client": int, "op": str, "agent": str, "token": str, "args": map}
    reply    {"id": int, "ok": true,  "result": any}
             {"id": int, "ok": false, "error": {"code": str, "message": str, "details": map}}
    events   [{"kind": "add"|"update"|"delete"|"evict", "tier", "namespace", "item_id",
               "version", "now", "seq"}, ...]   (one message per topic per request)
             a graph edge's: {"kind": "edge"|"invalidate", "tier", "namespace", "edge_id",
               "src", "dst", "type", "valid_from", "valid_to", "now", "seq"}
             [{"kind": "mark", "tier", "namespace", "seq", "epoch"}]   (a quiet namespace's last seq)

``client`` is a random 63-bit number a client picks once; with ``id`` it names a request,
so a retried request is answered from the server's memory and never applied twice.
Vectors travel as raw little-endian float32 bytes, never as lists of numbers.
The values inside payloads (vectors, items, hits, write columns, write results) are
encoded and decoded by :mod:`hivemem.memory_bus.codec`; the layouts it follows
(:data:`ITEM_FIELDS`, :data:`WRITE_COLUMNS`) are defined here with the other constants.
``docs/protocol.md`` gives the arguments of every op with examples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack
from hivemem.memory_bus.errors import HivememError, UnknownNameError
from hivemem.memory_bus.item import Item, NewItem

HEADER = b"HMB1"
PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_BATCH = 4096
ADMIN_AGENT = "__admin__"
REQUEST_ID_LIMIT = 2**64
"""Request ids go on the wire as msgpack ints, unsigned up to 64 bits: ids are in
[0, REQUEST_ID_LIMIT)."""
CLIENT_ID_LIMIT = 2**63
"""Client ids are in [0, CLIENT_ID_LIMIT) (a client draws its own at random: 63 bits)."""
NUMBER = (int, float)
"""What a number argument may be (``field(args, name, NUMBER)`` in
:mod:`hivemem.memory_bus.arguments`): an int or a float, never a bool."""

# Bounds msgpack applies while decoding, so a header declaring 2**31 elements in five
# bytes fails at once instead of allocating.
_UNPACK_LIMITS = {
    "max_bin_len": MAX_MESSAGE_BYTES,
    "max_str_len": 1 << 20,
    "max_array_len": 1 << 16,
    "max_map_len": 1 << 12,
    "max_ext_len": 0,
}


class Op(StrEnum):
    """Operations of the bus."""

    PING = "ping"
    REGISTER = "register"
    WRITE = "write"
    WRITE_MANY = "write_many"
    GET = "get"
    SEARCH = "search"
    SEARCH_MANY = "search_many"
    SCAN = "scan"
    UPDATE = "update"
    DELETE = "delete"
    HISTORY = "history"
    STATS = "stats"
    ADD_EDGE = "add_edge"
    INVALIDATE_EDGE = "invalidate_edge"
    EDGES = "edges"
    NEIGHBORS = "neighbors"
    PROMOTE = "promote"
    RETRIEVE = "retrieve"
    SUBSCRIBE = "subscribe"


MUTATING = frozenset(
    {
        Op.REGISTER,
        Op.WRITE,
        Op.WRITE_MANY,
        Op.UPDATE,
        Op.DELETE,
        Op.ADD_EDGE,
        Op.INVALIDATE_EDGE,
        Op.PROMOTE,
    }
)
"""Ops whose effects the journal records as requests (reads record only their recalls)."""


class Code(StrEnum):
    """Error codes of the protocol itself; store errors carry their own ``code``."""

    BAD_FRAME = "bad_frame"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    TOO_LARGE = "too_large"
    UNAUTHENTICATED = "unauthenticated"
    REQUEST_ID_REUSED = "request_id_reused"  # errors.RequestIdReusedError
    WRONG_SHARD = "wrong_shard"  # errors.WrongShardError
    INTERNAL = "internal"


class ProtocolError(HivememError):
    """A frame or request that does not follow the protocol."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request."""

    id: int
    client: int
    op: Op
    agent: str
    token: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: ``result`` when ``ok``, else ``error`` {code, message, details}."""

    id: int
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None


# --- framing --------------------------------------------------------------------------


def pack(obj: Any) -> bytes:
    """msgpack with bin types (bytes stay bytes)."""
    return bytes(msgpack.packb(obj, use_bin_type=True))


def unpack(payload: bytes) -> Any:
    """msgpack with size limits; any failure is a :class:`ProtocolError`."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            Code.TOO_LARGE, f"payload of {len(payload)} bytes", limit=MAX_MESSAGE_BYTES
        )
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise ProtocolError(Code.BAD_FRAME, f"undecodable msgpack: {exc}") from exc


def _payload(frames: list[bytes]) -> bytes:
    if len(frames) != 2:
        raise ProtocolError(
            Code.BAD_FRAME, f"expected 2 frames [header, payload], got {len(frames)}"
        )
    if frames[0] != HEADER:
        raise ProtocolError(
            Code.BAD_FRAME, f"unknown header {frames[0][:8]!r}, expected {HEADER!r}"
        )
    return frames[1]


def encode_request(
    req_id: int, client: int, op: str, agent: str, token: str, args: dict[str, Any]
) -> list[bytes]:
    """Frames a DEALER sends for one request."""
    return [
        HEADER,
        pack(
            {
                "id": req_id,
                "client": client,
                "op": str(op),
                "agent": agent,
                "token": token,
                "args": args,
            }
        ),
    ]


def decode_request(frames: list[bytes]) -> Request:
    """Parse the frames after the ROUTER identity; raises :class:`ProtocolError`."""
    body = unpack(_payload(frames))
    if not isinstance(body, dict):
        raise ProtocolError(Code.BAD_REQUEST, "request must be a map")
    req_id = body.get("id")
    if isinstance(req_id, bool) or not isinstance(req_id, int):
        raise ProtocolError(Code.BAD_REQUEST, "field 'id' must be an int")
    client = body.get("client")
    if isinstance(client, bool) or not isinstance(client, int):
        # Required: with a default, two senders that left it out shared their retry keys,
        # and the second one's write was answered with the first one's reply, unapplied.
        raise ProtocolError(
            Code.BAD_REQUEST,
            "field 'client' must be an int: a random 63-bit number the client picks once",
            field="client",
        )
    for name in ("op", "agent", "token"):
        if not isinstance(body.get(name), str):
            raise ProtocolError(Code.BAD_REQUEST, f"field {name!r} must be a str", field=name)
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(Code.BAD_REQUEST, "field 'args' must be a map", field="args")
    op = parse_op(body["op"])
    check_arg_names(op, args)
    return Request(req_id, client, op, body["agent"], body["token"], args)


_ITEM = frozenset(f.name for f in dataclasses.fields(NewItem))
_ON_BEHALF = frozenset({"agent", "token"})
_QUERY = frozenset({"namespace", "vector", "text", "k", "as_of"}) | _ON_BEHALF
_ROW = frozenset({"namespace", "item"}) | _ON_BEHALF
_READ = frozenset({"tier", "namespace", "now", "as_of", "vectors", "compact"})
ARG_NAMES: dict[Op, frozenset[str]] = {
    Op.PING: frozenset(),
    Op.REGISTER: frozenset({"agent_id", "groups", "role"}),
    Op.WRITE: frozenset({"tier", "namespace", "item", "now"}),
    Op.WRITE_MANY: frozenset({"tier", "items", "columns", "now"}),
    Op.GET: frozenset({"tier", "namespace", "item_id", "now"}),
    Op.SEARCH: _READ | {"vector", "text", "k"},
    Op.SEARCH_MANY: frozenset({"tier", "queries", "now", "vectors", "compact"}),
    Op.SCAN: frozenset({"tier", "namespace", "after", "limit", "as_of", "vectors"}),
    Op.UPDATE: frozenset({"tier", "namespace", "item_id", "expected_version", "now", "changes"}),
    Op.DELETE: frozenset({"tier", "namespace", "item_id", "now"}),
    Op.HISTORY: frozenset({"tier", "namespace", "item_id"}),
    Op.STATS: frozenset(),
    Op.ADD_EDGE: frozenset(
        {"namespace", "src", "dst", "type", "now", "valid_from", "valid_to", "meta"}
    ),
    Op.INVALIDATE_EDGE: frozenset({"namespace", "edge_id", "at"}),
    Op.EDGES: frozenset({"namespace", "as_of", "node", "type", "after", "limit"}),
    Op.NEIGHBORS: frozenset({"namespace", "node_id", "as_of", "direction"}),
    Op.PROMOTE: frozenset({"namespace", "children", "parent", "now", "edge_type", "detail"}),
    Op.RETRIEVE: frozenset({"namespace", "vector", "text", "k", "now", "method", "hops", "as_of"}),
    Op.SUBSCRIBE: frozenset({"topics"}),
}
"""The arguments each op takes: any other is refused by name (a misspelt ``as_of``
would otherwise be ignored and the request answered as if it were not there)."""


def check_arg_names(op: Op, args: dict[str, Any]) -> None:
    """Refuse arguments ``op`` does not take, and fields an item, a row or a query does not
    have, with the closest known names (``bad_request``).

    Checked on requests as they arrive, not on journal records replayed: a record
    acknowledged before this check existed replays as it was applied.
    """
    _known(args, ARG_NAMES[op], f"argument of {op.value}")
    if op is Op.WRITE or op is Op.PROMOTE:
        _known(args.get("item" if op is Op.WRITE else "parent"), _ITEM, "item field")
    elif op is Op.WRITE_MANY:
        for row in _maps(args.get("items")):
            _known(row, _ROW, "field of a batch row")
            _known(row.get("item"), _ITEM, "item field")
    elif op is Op.SEARCH_MANY:
        for query in _maps(args.get("queries")):
            _known(query, _QUERY, "field of a query")


def _maps(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if type(v) is dict] if type(value) is list else []


def _known(value: Any, names: frozenset[str], what: str) -> None:
    if type(value) is not dict or value.keys() <= names:
        return  # not a map: the handler names the wrong type
    name = next(str(k) for k in value if k not in names)
    hint = UnknownNameError(what, name, names)
    raise ProtocolError(Code.BAD_REQUEST, hint.message, field=name, suggestions=hint.suggestions)


def parse_op(name: str) -> Op:
    """The :class:`Op` called ``name``, or an ``unknown_op`` error with a suggestion."""
    op = _OP_BY_NAME.get(name) if type(name) is str else None  # Op(name) takes microseconds
    if op is None:
        hint = UnknownNameError("op", name, [o.value for o in Op])
        raise ProtocolError(Code.UNKNOWN_OP, hint.message, suggestions=hint.suggestions)
    return op


_OP_BY_NAME = {op.value: op for op in Op}


def request_id_of(frames: list[bytes]) -> int:
    """Best-effort id of a request that failed to decode (0 when unknown).

    Read from the first entries of the request's map alone (clients put ``id`` first),
    so that a request refused whole (over the size limit, or a map key that is not a
    str deep in its arguments) still gets an error its client can match: a reply with
    id 0 left the client waiting for its timeout.
    """
    if not frames:
        return 0
    payload = frames[1] if len(frames) > 1 else frames[0]  # [header, payload, extra frames]
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=len(payload) or 1, **_UNPACK_LIMITS
    )
    unpacker.feed(payload)
    try:
        for _ in range(min(unpacker.read_map_header(), 8)):
            if unpacker.unpack() == "id":
                req_id = unpacker.unpack()
                return req_id if isinstance(req_id, int) and not isinstance(req_id, bool) else 0
            unpacker.skip()
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        pass
    return 0


def encode_reply(req_id: int, result: Any) -> bytes:
    """A success reply payload."""
    return pack({"id": req_id, "ok": True, "result": result})


def encode_error(
    req_id: int, code: str, message: str, details: dict[str, Any] | None = None
) -> bytes:
    """An error reply payload."""
    return pack(
        {
            "id": req_id,
            "ok": False,
            "error": {"code": str(code), "message": message, "details": _safe(details or {})},
        }
    )


def unpack_reply(payload: bytes) -> Any:
    """msgpack of a reply, with its size capped but not its arrays, maps or strings.

    A reply comes from the server the client chose, and holds what the client asked for:
    70,000 edges are one ``edges`` call's answer, not an attack. The per-container
    limits of :func:`unpack` guard the server against what anybody sends it; applied to
    replies they refused such an answer, which the client took for no reply at all.
    msgpack still bounds every declared length by the payload's own size, so a
    five-byte header cannot make it allocate gigabytes.

    Raises:
        ProtocolError: a payload over ``MAX_MESSAGE_BYTES``, or undecodable msgpack.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            Code.TOO_LARGE, f"payload of {len(payload)} bytes", limit=MAX_MESSAGE_BYTES
        )
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise ProtocolError(Code.BAD_FRAME, f"undecodable msgpack: {exc}") from exc


def reply_id_of(frames: list[bytes]) -> int:
    """Best-effort id of a reply that failed to decode (0 when unknown or not a reply).

    Replies put ``id`` first (:func:`encode_reply`), as clients do in requests, so the
    reader of :func:`request_id_of` finds it; a client then fails that request at once
    instead of waiting for a reply that will never decode.
    """
    if len(frames) != 2 or frames[0] != HEADER:
        return 0
    return request_id_of(frames)


def decode_reply(frames: list[bytes]) -> Reply:
    """Parse a reply the DEALER received (:func:`unpack_reply`); raises :class:`ProtocolError`."""
    body = unpack_reply(_payload(frames))
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("id"), int)
        or not isinstance(body.get("ok"), bool)
    ):
        raise ProtocolError(Code.BAD_FRAME, "reply must be a map with int 'id' and bool 'ok'")
    if body["ok"]:
        return Reply(body["id"], True, result=body.get("result"))
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        raise ProtocolError(Code.BAD_FRAME, "error reply without an error map")
    return Reply(body["id"], False, error=error)


def _safe(value: Any) -> Any:
    """Details made msgpack-safe (unknown types become their repr)."""
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if isinstance(value, str | int | float | bool | bytes | type(None)):
        return value
    return repr(value)


# --- event topics and subscriptions ------------------------------------------------------

MAX_SUBSCRIPTION_BYTES = 1 << 16
"""Largest subscription the event socket reads; ZeroMQ drops a larger one (and its sender)."""

TOPIC_END = b"\x00\x00"
"""Ends every event topic, so that one namespace's topic is never a prefix of another's."""

MARK = "mark"
"""The ``kind`` of a mark on the event socket: a namespace's last event number, sent again
while the namespace is quiet (``EventPublisher.send_marks``)."""

GAP = "gap"
"""The ``kind`` of the record a client's ``events()`` yields for events it missed
(:mod:`hivemem.memory_bus.event_gaps`)."""


def event_topic(tier: str, namespace: str) -> bytes:
    """The topic of a namespace's events: ``tier/namespace`` in UTF-8, then ``TOPIC_END``.

    A NUL in the namespace is written NUL 0x01, so ``TOPIC_END`` occurs only at the end:
    ZeroMQ matches subscriptions by prefix, and the topic of ``team`` must not be a
    prefix of the topic of ``team-b`` (or of ``team\x00...``).
    """
    name = namespace.encode()
    if b"\x00" in name:
        name = name.replace(b"\x00", b"\x00\x01")
    return tier.encode() + b"/" + name + TOPIC_END


def wire_topic(tier: str, namespace: str) -> bytes:
    """The prefix a subscription to (tier, namespace) matches on the event socket."""
    if namespace:
        return event_topic(tier, namespace)
    return f"{tier}/".encode() if tier else b""


def encode_subscription(agent: str, token: str, topic: str) -> bytes:
    """What a SUB subscribes to so that the server lets it receive ``topic``'s events.

    The event socket is an XPUB in manual mode: a subscription reaches the server, which
    checks the agent's token and access (as for a request) and only then subscribes the
    subscriber to the topic's events (``docs/protocol.md``, "Events").
    """
    return HEADER + pack({"agent": agent, "token": token, "topic": topic})


def decode_subscription(payload: bytes) -> tuple[str, str, str] | None:
    """(agent, token, topic) of a subscription :func:`encode_subscription` made; else None."""
    if not payload.startswith(HEADER):
        return None
    try:
        body = unpack(payload[len(HEADER) :])
    except ProtocolError:
        return None
    if not isinstance(body, dict):
        return None
    agent, token, topic = body.get("agent"), body.get("token"), body.get("topic")
    if not (isinstance(agent, str) and isinstance(token, str) and isinstance(topic, str)):
        return None
    return agent, token, topic


# --- value layouts (their codecs are in codec.py) -------------------------------------

ITEM_FIELDS = tuple(f.name for f in dataclasses.fields(Item))
"""The fields of an item, in the order of its map and of a compact hit row
(``[id, score, *ITEM_FIELDS]``)."""

WRITE_COLUMNS = frozenset(
    {"namespace", "text", "vector", "meta", "importance", "valid_from", "valid_to", "level",
     "agent", "token"}
)  # fmt: skip
"""Columns of a columnar ``write_many``; ``text`` is required, the rest optional."""
