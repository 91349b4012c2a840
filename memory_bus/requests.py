"""What both transports share, free of I/O: request ids, frames, reply matching, outcomes.

:class:`_Requests` numbers a client's requests under one ``client_id``, encodes them
(refusing, by name, what msgpack cannot carry), decodes replies and turns an error reply
into the project's exception: the class of :mod:`~hivemem.memory_bus.errors` its code
names (:func:`error_from_reply`), :class:`BusTimeoutError` when no reply comes,
:class:`RemoteError` for a code unknown here. The sockets, retries and threads are
:mod:`hivemem.memory_bus.transport`'s.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import threading
from numbers import Integral, Real
from typing import Any

import numpy as np
from hivemem.memory_bus import errors
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.protocol import (
    CLIENT_ID_LIMIT,
    MAX_MESSAGE_BYTES,
    REQUEST_ID_LIMIT,
    Code,
    ProtocolError,
    Reply,
    decode_reply,
    encode_request,
    pack,
    reply_id_of,
)


class BusTimeoutError(HivememError):
    """No reply within the timeout, after every retry."""

    code = "timeout"


class RemoteError(HivememError):
    """An error reply whose code names no local exception class."""


def _error_classes() -> dict[str, type[HivememError]]:
    found: dict[str, type[HivememError]] = {}
    for obj in vars(errors).values():
        # bad_request is the request decoder's code as well: every one is a ProtocolError
        # on the client, whichever check found it on the server
        if obj is errors.WrongTypeError:
            continue
        if isinstance(obj, type) and issubclass(obj, HivememError):
            found.setdefault(obj.code, obj)  # the first class of a code is its most general
    return found


_BY_CODE = _error_classes()


def error_from_reply(error: dict[str, Any]) -> HivememError:
    """The exception a server's error reply stands for, with its code, message and details,
    and the attributes its class sets (``field``, ``suggestions``) taken from the details."""
    code = str(error.get("code", "internal"))
    cls = _BY_CODE.get(code, ProtocolError if code in _PROTOCOL_CODES else RemoteError)
    exc = cls.__new__(cls)
    details = error.get("details")
    HivememError.__init__(
        exc, str(error.get("message", "")), **(details if isinstance(details, dict) else {})
    )
    exc.code = code
    _set_attributes(exc)
    return exc


_PROTOCOL_CODES = {"bad_frame", "bad_request", "unknown_op", "too_large", "unauthenticated"}

_ATTRIBUTES: dict[type[HivememError], dict[str, Any]] = {
    errors.InvalidInputError: {"field": ""},
    errors.UnknownNameError: {"suggestions": []},
}
"""What the classes' ``__init__`` sets besides the details, with a default for a reply
that lacks it: an error rebuilt from a reply skips ``__init__`` (its arguments are not
on the wire), and ``except InvalidInputError as e: e.field`` must work all the same."""


def _set_attributes(exc: HivememError) -> None:
    for cls, defaults in _ATTRIBUTES.items():
        if isinstance(exc, cls):
            for name, default in defaults.items():
                setattr(exc, name, exc.details.get(name, default))


class _Requests:
    """What both transports share, free of I/O: ids, frames, reply matching, outcomes.

    One :class:`~hivemem.memory_bus.client.MemoryClient` draws the ids of its blocking
    calls (caller threads) and of its ``nowait`` calls (loop thread) from one instance,
    so both paths number requests in one sequence under one ``client_id``.
    """

    def __init__(
        self, address: str, timeout: float | None, retries: int, client_id: int | None = None
    ) -> None:
        if client_id is not None and (
            isinstance(client_id, bool)
            or not isinstance(client_id, int)
            or not 0 <= client_id < CLIENT_ID_LIMIT
        ):
            raise errors.InvalidInputError(
                "client_id", f"expected an int in [0, 2**63), got {client_id!r}"
            )
        timeout, retries = check_patience(timeout, retries)
        self.address, self.timeout, self.retries = address, timeout, retries
        self.client_id = secrets.randbits(63) if client_id is None else client_id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def attempts(self) -> int:
        """Sends of one request: the first and its retries."""
        return self.retries + 1

    def number_from(self, start: int) -> None:
        """The next requests carry ids ``start``, ``start + 1``, ... (after the last id
        the wire carries, ``REQUEST_ID_LIMIT - 1``, 1 again)."""
        with self._lock:
            self._ids = itertools.count(start)

    def encode(
        self, op: str, agent: str, token: str, args: dict[str, Any]
    ) -> tuple[int, list[bytes]]:
        """A fresh request id and the frames that carry the request under it.

        Raises:
            InvalidInputError: ``args`` hold something msgpack cannot carry.
            TooLargeError: the request is over the bus's message limit (the bus's
                socket would drop it, and the client wait for its timeout).
        """
        with self._lock:
            req_id = next(self._ids)
            if req_id >= REQUEST_ID_LIMIT:  # after number_from near the limit: wrap around
                self._ids = itertools.count(1)
                req_id = next(self._ids)
        try:
            frames = encode_request(req_id, self.client_id, op, agent, token, args)
        except (TypeError, ValueError, OverflowError):  # msgpack's, at this boundary
            # numpy numbers are the usual culprit (an id from an array, k from a count):
            # made plain only now, so that a request without them pays nothing
            args = _plain(args)
            try:
                frames = encode_request(req_id, self.client_id, op, agent, token, args)
            except (TypeError, ValueError, OverflowError) as exc:
                raise errors.InvalidInputError(_unsendable(args), f"cannot be sent: {exc}") from exc
        if len(frames[-1]) > MAX_MESSAGE_BYTES:
            raise errors.TooLargeError(f"{op} request (bytes)", MAX_MESSAGE_BYTES, len(frames[-1]))
        return req_id, frames

    @staticmethod
    def decode(frames: list[bytes]) -> Reply | None:
        """The reply in ``frames``, or None if they are not a reply (the caller retries).

        A reply whose id can be read but not the rest is an error reply (``bad_frame``)
        to that request: sent again, it would come back the same, and the server would
        do the work again each time.
        """
        try:
            return decode_reply(frames)
        except ProtocolError as exc:
            req_id = reply_id_of(frames)
            if not req_id:
                return None
            message = f"the reply to request {req_id} cannot be decoded: {exc.message}"
            error = {"code": Code.BAD_FRAME.value, "message": message, "details": exc.details}
            return Reply(req_id, False, error=error)

    @staticmethod
    def outcome(reply: Reply) -> Any:
        """The result of an ok reply; raises the exception an error reply stands for."""
        if not reply.ok:
            raise error_from_reply(reply.error or {})
        return reply.result

    def timed_out(self) -> BusTimeoutError:
        """The error for a request that got no reply after every attempt."""
        return BusTimeoutError(
            f"no reply from {self.address} after {self.attempts} "
            f"attempt{'' if self.attempts == 1 else 's'} of {self.timeout} s",
            address=self.address,
            attempts=self.attempts,
        )

    def transport_error(self, exc: Exception) -> HivememError:
        """A ZeroMQ failure as the project's error (raise it ``from exc``)."""
        return HivememError(f"transport error talking to {self.address}: {exc}")


def check_patience(timeout: float | None, retries: int) -> tuple[float | None, int]:
    """``timeout`` and ``retries`` as Python numbers, once checked: a timeout in seconds
    > 0 (None: wait for ever) and retries an int >= 0, of any numeric type that says so
    (``numbers.Real``, ``numbers.Integral``: a count taken from numpy is one). Either one
    wrong made a write fail "after 0 attempts", or a blocking call crash on None.

    Raises:
        InvalidInputError: naming ``timeout`` or ``retries``.
    """
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, Real) or not 0 < timeout < math.inf
    ):
        raise errors.InvalidInputError(
            "timeout", f"must be seconds > 0, or None to wait for ever; got {timeout!r}"
        )
    if isinstance(retries, bool) or not isinstance(retries, Integral) or retries < 0:
        raise errors.InvalidInputError("retries", f"must be an int >= 0; got {retries!r}")
    return (None if timeout is None else float(timeout)), int(retries)


CURVE_KEYS = ("public", "secret", "server")
"""The keys of a client's ``curve`` map (z85 or raw): its own pair and the server's public key."""


def check_curve(curve: Any) -> None:
    """Refuse a ``curve`` that is not a map of the three :data:`CURVE_KEYS`.

    Raises:
        InvalidInputError: naming ``curve`` and the keys missing.
    """
    if curve is None:
        return
    if not isinstance(curve, dict):
        raise errors.InvalidInputError("curve", f"must be a dict, got {type(curve).__name__}")
    missing = [k for k in CURVE_KEYS if k not in curve]
    if missing:
        raise errors.InvalidInputError(
            "curve", f"needs the keys {', '.join(CURVE_KEYS)}; missing {', '.join(missing)}"
        )


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars (in maps and lists, at any depth) as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _unsendable(args: dict[str, Any]) -> str:
    """Where in ``args`` the first value msgpack cannot carry is (``args`` if none alone
    fails): ``item.meta.tags``, or ``items[3].meta.tags`` for a column's row, as the
    server names the fields of a row (a host then names the agent whose row it is:
    :func:`hivemem.agents.batches.for_agent`). Only asked once a request failed."""
    path = _first_unpackable(args, "")
    match = _COLUMN_ROW.match(path or "")
    if match is not None:  # columns.meta[3].tags -> items[3].meta.tags
        return f"items[{match['row']}].{match['column']}{path[match.end() :]}"  # type: ignore[index]
    return path or "args"


_COLUMN_ROW = re.compile(r"columns\.(?P<column>\w+)\[(?P<row>\d+)\]")


def _first_unpackable(value: Any, path: str) -> str | None:
    """The path of the innermost value msgpack refuses within ``value`` (a map's key or
    a value of a type of its own: the container holding it), or None if it packs."""
    try:
        pack(value)
        return None
    except (TypeError, ValueError, OverflowError):
        pass
    if isinstance(value, dict):
        inner = (_first_unpackable(v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
    elif isinstance(value, list | tuple):
        inner = (_first_unpackable(v, f"{path}[{i}]") for i, v in enumerate(value))
    else:
        return path
    return next((found for found in inner if found is not None), path)
