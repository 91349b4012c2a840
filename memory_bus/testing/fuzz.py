"""A protocol fuzzer: malformed frames and requests for a live bus server.

Used by the test suite (10,000 inputs) and by ``benchmarks/fuzz_bus.py`` (any count).
Every input is built from a seeded generator, so a failure is reproducible by its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import zmq
from hivemem.memory_bus.protocol import HEADER, Op, decode_reply, encode_request

Frames = list[bytes]


def _valid_args(rng: np.random.Generator, dim: int) -> dict[str, Any]:
    vector = rng.standard_normal(dim).astype("<f4").tobytes()
    return {"tier": "shared", "namespace": "team", "vector": vector, "k": 3, "now": 1.0,
            "item": {"text": "fuzz", "vector": vector}, "after": 0, "limit": 5}  # fmt: skip


def _mutations(agent: str, token: str, dim: int) -> list[Callable[[np.random.Generator], Frames]]:
    def random_payload(rng: np.random.Generator) -> Frames:
        return [HEADER, rng.bytes(int(rng.integers(0, 64)))]

    def random_header(rng: np.random.Generator) -> Frames:
        return [rng.bytes(int(rng.integers(0, 8))), msgpack.packb({"id": 1})]

    def frame_count(rng: np.random.Generator) -> Frames:
        return [HEADER] * int(rng.choice([1, 3, 4]))

    def truncated(rng: np.random.Generator) -> Frames:
        frames = encode_request(1, 9, "search", agent, token, _valid_args(rng, dim))
        cut = int(rng.integers(0, len(frames[1])))
        return [HEADER, frames[1][:cut]]

    def huge_length(rng: np.random.Generator) -> Frames:
        marker = bytes([int(rng.choice([0xDD, 0xDF, 0xDB, 0xC6]))])  # array32, map32, str32, bin32
        return [HEADER, marker + b"\xff\xff\xff\xff" + rng.bytes(4)]

    def wrong_types(rng: np.random.Generator) -> Frames:
        body: dict[str, Any] = {"id": 1, "client": 9, "op": "search", "agent": agent, "token": token,
                                "args": _valid_args(rng, dim)}  # fmt: skip
        key = str(rng.choice(["id", "client", "op", "agent", "token", "args"]))
        body[key] = [None, 1.5, "x", [], {}, True, b"\x00"][int(rng.integers(7))]
        return [HEADER, msgpack.packb(body)]

    def bad_args(rng: np.random.Generator) -> Frames:
        args = _valid_args(rng, dim)
        key = str(rng.choice(list(args)))
        args[key] = [None, -1, math.nan, "x" * 100, [1, 2], {"a": 1}, b"\x01\x02\x03", True][
            int(rng.integers(8))
        ]
        op = str(rng.choice([o.value for o in Op]))
        return encode_request(int(rng.integers(1, 1 << 40)), 9, op, agent, token, args)

    def nan_vector(rng: np.random.Generator) -> Frames:
        args = _valid_args(rng, dim)
        bad = np.full(dim, np.nan, dtype="<f4").tobytes()
        args["vector"] = bad
        args["item"]["vector"] = bad
        return encode_request(1, 9, str(rng.choice(["search", "write"])), agent, token, args)

    def unknown_op(rng: np.random.Generator) -> Frames:
        return encode_request(1, 9, rng.bytes(6).hex(), agent, token, {})

    def bad_token(rng: np.random.Generator) -> Frames:
        return encode_request(1, 9, "write", agent, rng.bytes(8).hex(), _valid_args(rng, dim))

    def flipped_bytes(rng: np.random.Generator) -> Frames:
        op = str(rng.choice(["write", "search", "write_many", "search_many"]))
        args = _valid_args(rng, dim)
        args["items"] = [{"namespace": "team", "item": args["item"]}]
        args["queries"] = [{"namespace": "team", "vector": args["vector"], "k": 2}]
        body = bytearray(
            encode_request(int(rng.integers(1, 1 << 40)), 9, op, agent, token, args)[1]
        )
        for _ in range(int(rng.integers(1, 5))):
            body[int(rng.integers(len(body)))] = int(rng.integers(256))
        return [HEADER, bytes(body)]

    def bad_columns(rng: np.random.Generator) -> Frames:
        """A columnar write_many with one column broken (a wrong type, length or value)."""
        n = int(rng.integers(1, 5))
        columns: dict[str, Any] = {
            "namespace": "team", "text": ["fuzz"] * n,
            "vector": rng.standard_normal((n, dim)).astype("<f4").tobytes(),
            "meta": [{}] * n, "importance": [1.0] * n, "valid_to": [math.inf] * n,
        }  # fmt: skip
        name = str(rng.choice([*columns, "agent", "token", "level", "valid_from", "bogus"]))
        columns[name] = [
            None, -1, math.nan, "x", [1] * (n + 1), [None] * n, [{"a": math.nan}] * n,
            [math.nan] * n, [-math.inf] * n, b"\x01\x02\x03", rng.bytes(4 * dim * n + 4), True,
        ][int(rng.integers(12))]  # fmt: skip
        args = {"tier": "shared", "now": 1.0, "columns": columns}
        return encode_request(int(rng.integers(1, 1 << 40)), 9, "write_many", agent, token, args)

    def text_query(rng: np.random.Generator) -> Frames:
        """A query by text for the bus to embed: a wrong type, one too long, one beside a
        vector, or a good one."""
        args = _valid_args(rng, dim)
        text = [7, "x" * 40_000, b"\x00", ["fuzz"], "", "fuzz"][int(rng.integers(6))]
        query = {"namespace": "team", "text": text, "k": 2}
        if rng.random() < 0.3:
            query["vector"] = args["vector"]
        op = str(rng.choice(["search", "search_many", "retrieve"]))
        body = {**args, **query, "queries": [query]}
        if "vector" not in query:
            del body["vector"]
        return encode_request(int(rng.integers(1, 1 << 40)), 9, op, agent, token, body)

    return [random_payload, random_header, frame_count, truncated, huge_length, wrong_types, bad_args,
            nan_vector, unknown_op, bad_token, flipped_bytes, bad_columns, text_query]  # fmt: skip


def inputs(count: int, seed: int, agent: str, token: str, dim: int) -> Iterator[Frames]:
    """``count`` malformed inputs, drawn evenly from every kind of mutation."""
    rng = np.random.default_rng(seed)
    kinds = _mutations(agent, token, dim)
    for i in range(count):
        yield kinds[i % len(kinds)](rng)


def fuzz(
    sock: zmq.Socket[Any], frames: Iterator[Frames], window: int = 64, probe: Frames | None = None
) -> dict[str, int]:
    """Send every input on a DEALER connected to the server; count replies by outcome.

    Args:
        sock: A DEALER connected to the server, with a receive timeout.
        frames: The inputs.
        window: Inputs in flight before their replies are read.
        probe: A valid request sent after every window; its replies are counted under
            ``"probe_ok"`` and must all be ``ok``.

    Raises:
        AssertionError: a reply went missing (the socket's receive timeout expired) or
            could not be decoded, or a probe was not answered ``ok``.
    """
    counts: dict[str, int] = {}
    in_flight = 0
    for msg in frames:
        sock.send_multipart(msg)
        in_flight += 1
        if in_flight == window:
            _drain(sock, in_flight, counts)
            in_flight = 0
            if probe is not None:
                _probe(sock, probe, counts)
    _drain(sock, in_flight, counts)
    return counts


def _probe(sock: zmq.Socket[Any], probe: Frames, counts: dict[str, int]) -> None:
    sock.send_multipart(probe)
    try:
        reply = decode_reply(sock.recv_multipart())
    except zmq.Again:
        raise AssertionError("the server stopped answering valid requests") from None
    if not reply.ok:
        raise AssertionError(f"a valid request after fuzzing failed: {reply.error}")
    counts["probe_ok"] = counts.get("probe_ok", 0) + 1


def _drain(sock: zmq.Socket[Any], n: int, counts: dict[str, int]) -> None:
    for _ in range(n):
        try:
            reply = decode_reply(sock.recv_multipart())
        except zmq.Again:
            raise AssertionError("the server stopped answering") from None
        code = "ok" if reply.ok else str((reply.error or {}).get("code"))
        counts[code] = counts.get(code, 0) + 1
