"""The exceptions of hivemem.

Every error the project raises derives from :class:`HivememError` and carries the ids
involved, so a caller (or the bus, which turns them into error replies) never has to
parse a message. Third-party errors are translated once, at the boundary that meets
them, with ``raise ... from exc``.

The tree::

    HivememError
    ├── ConfigError                  a configuration that cannot work
    │   └── UnknownNameError         a policy/tier/agent name nobody registered ("did you mean")
    ├── InvalidInputError            a value that breaks the data model (field, reason)
    │   ├── WrongTypeError           a value of the wrong type (``bad_request`` on the wire)
    │   ├── DimensionMismatchError   a vector of the wrong dimension
    │   ├── NonFiniteError           NaN or inf in a vector or a number
    │   └── TooLargeError            text, meta, batch or message over its limit
    ├── AccessDeniedError            the caller may not touch that tier/namespace
    ├── NotFoundError
    │   ├── NamespaceNotFoundError   (tier, namespace)
    │   ├── ItemNotFoundError        (tier, namespace, item_id)
    │   └── EdgeNotFoundError        (namespace, edge_id)
    ├── VersionConflictError         an update against a stale version
    ├── CapacityError                an item that can never fit its namespace
    ├── RequestIdReusedError         a new request under the key of a remembered one
    └── JournalWriteError            the bus could not log a change (disk full, I/O error)
        └── JournalSyncError         an fsync failed under `always`: the bus stops
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class HivememError(Exception):
    """Base of every hivemem error.

    Attributes:
        code: A stable, machine-readable name of the condition (used on the wire).
        details: The ids and values involved, msgpack-safe.
    """

    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the class, ``args`` and attributes, without calling ``__init__``:
        the subclasses' constructors take the ids involved, not the message that
        ``args`` holds, so the default (``cls(*args)``) could not rebuild them. Ray
        pickles an error raised in an agent host to raise it again in the driver."""
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[HivememError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """A pickled :class:`HivememError` again: ``cls`` with ``args`` and ``state``."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def in_row(exc: HivememError, row: int, key: str = "items") -> HivememError:
    """``exc``, raised about one row of a batch, made to name it: its field becomes
    ``items[row].<field>`` (``queries[row]``... with ``key="queries"``; in the message
    too), and ``details.row`` the row."""
    field = exc.details.get("field")
    if isinstance(field, str) and not field.startswith(f"{key}["):
        named = f"{key}[{row}].{field}"
        exc.message = exc.message.replace(field, named, 1)
        exc.args = (exc.message,)
        exc.details["field"] = named
        if isinstance(exc, InvalidInputError):
            exc.field = named
    elif not isinstance(field, str):
        exc.message = f"{exc.message} ({key}[{row}])"
        exc.args = (exc.message,)
    exc.details["row"] = row
    return exc


def as_single(exc: HivememError, batch_field: str, field: str) -> HivememError:
    """``exc``, raised about the one row of a batch made of a single request, made to name
    the request's own field: ``items[0].text`` of a ``write`` is its ``item.text``."""
    named = exc.details.get("field")
    if isinstance(named, str) and named.startswith(batch_field):
        own = field + named[len(batch_field) :]
        exc.message = exc.message.replace(named, own, 1)
        exc.args = (exc.message,)
        exc.details["field"] = own
        if isinstance(exc, InvalidInputError):
            exc.field = own
    exc.details.pop("row", None)
    return exc


class ConfigError(HivememError):
    """A configuration that cannot work (bad policy parameters, impossible capacity)."""

    code = "config"


class UnknownNameError(ConfigError):
    """A name that no registry knows, with the closest known names."""

    code = "unknown_name"

    def __init__(self, kind: str, name: str, choices: Iterable[str], module: str = "") -> None:
        """``module``: the names are those a module defines, ``name`` one asked of it as
        ``module:name`` (matched on the part after the colon, and shown whole)."""
        known = sorted(choices)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if module:
            name, close = f"{module}:{name}", [f"{module}:{c}" for c in close]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listed = f"{module} defines" if module else "known"
        super().__init__(
            f"unknown {kind} {name!r}{hint} ({listed}: {', '.join(known) or 'none'})",
            kind=kind,
            name=name,
            suggestions=close,
        )
        self.suggestions = close


class InvalidInputError(HivememError):
    """A value that breaks the data model."""

    code = "invalid"

    def __init__(self, field: str, reason: str, **details: Any) -> None:
        super().__init__(f"invalid {field}: {reason}", field=field, **details)
        self.field = field


class WrongTypeError(InvalidInputError):
    """A value of the wrong type (a str where a number goes, a number where a list does).

    Still an :class:`InvalidInputError` for Python callers; on the wire it is
    ``bad_request``, as the same mistake is when the request's decoder finds it first
    (a ``write_many`` given as columns is type-checked by the store, given as rows by
    the decoder: both answer alike).
    """

    code = "bad_request"


class DimensionMismatchError(InvalidInputError):
    """A vector whose dimension differs from the store's."""

    code = "dimension"

    def __init__(self, field: str, expected: int, got: int) -> None:
        super().__init__(
            field, f"expected dimension {expected}, got {got}", expected=expected, got=got
        )


class NonFiniteError(InvalidInputError):
    """NaN or infinity where a finite number is required."""

    code = "non_finite"


class TooLargeError(InvalidInputError):
    """Text, meta, a batch or a message over its limit."""

    code = "too_large"

    def __init__(self, field: str, limit: int, got: int) -> None:
        super().__init__(field, f"{got} exceeds the limit of {limit}", limit=limit, got=got)


class AccessDeniedError(HivememError):
    """The caller may not touch that tier and namespace."""

    code = "access_denied"

    def __init__(self, agent_id: str, tier: str, namespace: str, action: str = "access") -> None:
        super().__init__(
            f"agent {agent_id!r} may not {action} {tier}/{namespace}",
            agent_id=agent_id,
            tier=tier,
            namespace=namespace,
            action=action,
        )


class NotFoundError(HivememError):
    """Something asked for by id or name does not exist."""

    code = "not_found"


class NamespaceNotFoundError(NotFoundError):
    """No namespace of that name in that tier."""

    code = "namespace_not_found"

    def __init__(self, tier: str, namespace: str) -> None:
        super().__init__(f"no namespace {tier}/{namespace}", tier=tier, namespace=namespace)


class ItemNotFoundError(NotFoundError):
    """No item with that id in that namespace."""

    code = "item_not_found"

    def __init__(self, tier: str, namespace: str, item_id: int) -> None:
        super().__init__(
            f"no item {item_id} in {tier}/{namespace}",
            tier=tier,
            namespace=namespace,
            item_id=item_id,
        )


class EdgeNotFoundError(NotFoundError):
    """No edge with that id in that graph namespace."""

    code = "edge_not_found"

    def __init__(self, namespace: str, edge_id: int) -> None:
        super().__init__(
            f"no edge {edge_id} in graph/{namespace}", namespace=namespace, edge_id=edge_id
        )


class VersionConflictError(HivememError):
    """An optimistic update whose expected version is not the current one."""

    code = "version_conflict"

    def __init__(self, item_id: int, expected: int, actual: int) -> None:
        super().__init__(
            f"item {item_id} is at version {actual}, not {expected}: re-read and retry",
            item_id=item_id,
            expected=expected,
            actual=actual,
        )


class CapacityError(HivememError):
    """An item that can never fit its namespace (e.g. more tokens than the budget)."""

    code = "capacity"


class WrongShardError(HivememError):
    """A namespace sent to a shard of a bus that does not own it: its client lists the
    shards in another order, or sent to one shard as if it were the whole bus. Nothing
    was applied; the namespace belongs to ``details.owner`` (of ``details.count``)."""

    code = "wrong_shard"

    @classmethod
    def of(cls, namespace: str, owner: int, index: int, count: int) -> WrongShardError:
        """The error for ``namespace``, owned by shard ``owner``, sent to shard ``index``."""
        return cls(
            f"namespace {namespace!r} belongs to shard {owner} of {count}, not to this one "
            f"({index} of {count}): list the bus's shards in shard order (ping says each "
            "one's place), or use a client given every shard",
            namespace=namespace,
            owner=owner,
            index=index,
            count=count,
        )


class RequestIdReusedError(HivememError):
    """A changing request under the (client, id, agent) of a remembered one, but not that
    request: two writers given one ``client_id``, or ids numbered again from the start.

    A retry resends the same bytes and gets the remembered reply; this one differs (its
    op, length or content: ``docs/protocol.md``, "Idempotent retries"), so the bus
    refuses it and applies nothing, where it used to answer it with the other request's
    reply. Give each writer its own ``client_id`` (the default draws a random one).
    """

    code = "request_id_reused"

    @classmethod
    def of(cls, client: int, request_id: int, agent: str) -> RequestIdReusedError:
        """The error for the request ``(client, request_id, agent)`` names."""
        return cls(
            f"request {request_id} of client {client} (agent {agent!r}) is not the request "
            "remembered under that id, which was answered already; nothing was applied: "
            "give each writer its own client_id, and never number a client's requests again",
            client=client,
            request_id=request_id,
            agent=agent,
        )


class JournalWriteError(HivememError):
    """The bus could not add a change to its journal (disk full, file too large, I/O error).

    Nothing of the request was applied or kept, and the journal holds no part of it: retry
    once the disk has room. The server goes on serving reads meanwhile.
    """

    code = "journal_write_failed"

    def __init__(self, path: str, reason: str, outcome: str = "the change was not applied") -> None:
        super().__init__(
            f"could not write the journal {path}: {reason}; {outcome}", path=path, reason=reason
        )


class JournalSyncError(JournalWriteError):
    """The journal's fsync failed under ``fsync always``: the changes written since the
    last fsync are applied in memory and may or may not be on the disk.

    None of them may be acknowledged, and the journal takes no more records: the bus
    server stops without replying to them (as PostgreSQL and Redis do), and a restart
    replays what the disk holds. A client's retry of such a change is then answered from
    the log, or applied, once.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            path, reason, "the changes since the last fsync are not acknowledged; the bus stops"
        )
