"""A request's arguments, read by name: each checked against the type it must have.

The handlers (:mod:`hivemem.memory_bus.handlers`, :mod:`hivemem.memory_bus.graph_handlers`,
:mod:`hivemem.memory_bus.row_auth`) and the codec of new items read every argument
through :func:`field`, so that a missing argument, a wrong type, a bool where a number
belongs or a NaN is refused the same way, with the argument's name. The arguments most
ops share (``now``, ``tier``, a batch) have their own readers here, as has a topic of
``subscribe``'s ``topics`` (:func:`split_topic`, which clients use on their topics too).

Separate from :mod:`hivemem.memory_bus.protocol`, which holds the wire format itself
(its constants, limits and frames) and decodes a request up to its argument map: this
module is what the ops do with that map. Argument names are checked on arrival, in
:func:`~hivemem.memory_bus.protocol.decode_request`, against
:data:`~hivemem.memory_bus.protocol.ARG_NAMES`; that check stays there, on the decode path.
"""

from __future__ import annotations

import math
from typing import Any

from hivemem.memory_bus.errors import NonFiniteError
from hivemem.memory_bus.item import TierName
from hivemem.memory_bus.protocol import MAX_BATCH, NUMBER, Code, ProtocolError


def now_of(args: dict[str, Any]) -> float:
    """A request's simulation time, ``args["now"]``, as a float."""
    return float(field(args, "now", NUMBER))


def recall_time(args: dict[str, Any]) -> float | None:
    """When a read recalls what it finds: ``args["now"]``, or None (absent: the read is a
    look, which changes no item's hits or access time)."""
    now = field(args, "now", NUMBER, None)
    return None if now is None else float(now)


def field(
    args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    """``args[name]`` checked against ``kind`` (bools are not ints); ``default`` if absent."""
    value = args.get(name)
    if type(value) is kind and kind is not float:  # exactly the type asked (a float may be NaN)
        return value
    if value is None:
        if default is ...:
            raise ProtocolError(Code.BAD_REQUEST, f"missing argument {name!r}", field=name)
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(
            Code.BAD_REQUEST, f"argument {name!r} must be {_names(kinds)}, got bool", field=name
        )
    if not isinstance(value, kinds):
        got = type(value).__name__
        raise ProtocolError(
            Code.BAD_REQUEST, f"argument {name!r} must be {_names(kinds)}, got {got}", field=name
        )
    if isinstance(value, float) and math.isnan(value):  # inf is the callee's to judge
        raise NonFiniteError(name, "is NaN")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)


def plain_number(value: Any) -> bool:
    """An int (not a bool) or a float that is not NaN: what ``field(.., NUMBER)`` accepts."""
    kind = type(value)
    return kind is int or (kind is float and value == value)


def tier_of(args: dict[str, Any]) -> TierName:
    """The ``tier`` argument."""
    return TierName.parse(field(args, "tier", str))


def batch(args: dict[str, Any], name: str) -> list[Any]:
    """A list argument of at most ``MAX_BATCH`` entries."""
    entries = field(args, name, list)
    if len(entries) > MAX_BATCH:
        raise ProtocolError(
            Code.TOO_LARGE,
            f"{len(entries)} entries in {name!r}",
            field=name,
            limit=MAX_BATCH,
            got=len(entries),
        )
    return entries


def split_topic(topic: str) -> tuple[str, str]:
    """A subscription topic as (tier, namespace); namespace "" means every one of the tier.

    ``"shared/team-a"`` is one namespace, ``"shared/"`` a whole tier and ``""`` everything
    (the last two are the admin's).
    """
    if topic == "":
        return "", ""
    tier, slash, namespace = topic.partition("/")
    if not slash or not tier:
        raise ProtocolError(
            Code.BAD_REQUEST,
            f"topic {topic!r} is not 'tier/namespace', 'tier/' or ''",
            field="topics",
        )
    return tier, namespace
