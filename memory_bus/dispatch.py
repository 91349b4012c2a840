"""The bus server's request path: decode, authenticate, answer a retry, journal, apply.

:class:`Dispatcher` is the part of :class:`~hivemem.memory_bus.server.BusServer` that
turns one request's frames into its reply and the changes left for after the reply
(``server.py``'s docstring: apply after reply). The server calls it from its owner
thread, or from :meth:`~hivemem.memory_bus.server.BusServer.handle`'s caller under its
lock, so nothing here takes a lock. The journal's side (records before the handler
runs, records taken back, recalls) is :mod:`hivemem.memory_bus.durability`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from hivemem.memory_bus.auth import AgentRegistry, token_for
from hivemem.memory_bus.durability import Durability, Fingerprint, RecentReplies, fingerprint
from hivemem.memory_bus.errors import HivememError, JournalWriteError, RequestIdReusedError
from hivemem.memory_bus.handlers import HANDLERS, REFUSED_AFTER_A_CHANGE, Context
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.metrics import BusMetrics
from hivemem.memory_bus.protocol import (
    ADMIN_AGENT,
    MAX_MESSAGE_BYTES,
    MUTATING,
    Code,
    Op,
    ProtocolError,
    Request,
    decode_request,
    encode_error,
    encode_reply,
    request_id_of,
)
from hivemem.memory_bus.row_auth import (
    authenticate,
    authenticate_rows,
    kept_reply,
    reply_again,
)
from hivemem.memory_bus.store import MemoryStore

log = logging.getLogger(__name__)

Change = Callable[[], None]
"""A change to the store left for after the reply (``server.py``'s docstring)."""

RECALLING = frozenset({Op.GET, Op.SEARCH, Op.SEARCH_MANY, Op.RETRIEVE})
"""Reads that, given a ``now``, recall what they find (its hits and access time)."""


class Dispatcher:
    """One server's request path.

    Args:
        store: The store requests read and change.
        registry: Who the agents are (tokens, groups, roles).
        replies: The answers to recent changes, for retries.
        durability: The journal's side of each request.
        metrics: Where requests and their latency are counted.

    Attributes:
        verified: (agent, token) pairs already authenticated (a cache the event socket's
            subscription checks share).
        info: What ``ping`` and ``subscribe`` tell a client (the event socket's address,
            set once the server has bound it).
    """

    def __init__(
        self,
        store: MemoryStore,
        registry: AgentRegistry,
        replies: RecentReplies,
        durability: Durability,
        metrics: BusMetrics,
    ) -> None:
        self.store, self.registry, self.replies = store, registry, replies
        self.durability, self.metrics = durability, metrics
        self.verified: set[tuple[str, str]] = set()
        # The keys of the last reads that recalled (no replies: answered again, a look)
        self.recalls = RecentReplies(replies.size)
        self._refused_after_a_change = False  # of the request apply() answered last
        self.info: dict[str, Any] = {"pub": ""}

    def handle(
        self, frames: list[bytes], until_sent: list[Change] | None = None
    ) -> tuple[bytes, list[Change]]:
        """The reply, and the changes to apply once it is sent (see the module docstring).

        ``until_sent``: the request is counted by what is put there, for the caller to
        run once the reply is sent, its latency running until then (a group commit's
        replies wait for its fsync); None: counted with the changes, its latency ending
        with the reply's encoding.
        """
        started = time.perf_counter()
        try:
            req = decode_request(frames)
        except ProtocolError as exc:
            if until_sent is not None:
                until_sent.append(partial(self._count, "invalid", exc.code, started))
            else:
                self.metrics.request("invalid", exc.code, time.perf_counter() - started)
            return encode_error(request_id_of(frames), exc.code, exc.message, exc.details), []
        # the raw frame is at hand only here; a look (a read without now) needs none
        print_ = (
            fingerprint(req.op, frames[1], req.agent, req.token)
            if req.op in MUTATING or (req.op in RECALLING and req.args.get("now") is not None)
            else None
        )
        reply, code, later = self.answer(req, print_)
        if until_sent is not None:
            until_sent.append(partial(self._count, req.op.value, code, started))
        else:  # the latency ends here; recording it can wait until the reply is on its way
            later.append(
                partial(self.metrics.request, req.op.value, code, time.perf_counter() - started)
            )
        return reply, later

    def _count(self, op: str, code: str, started: float) -> None:
        self.metrics.request(op, code, time.perf_counter() - started)

    def settle(self, later: list[Change], snapshot: bool = True) -> None:
        """Apply what the request just answered left for after its reply; snapshot if due
        (and ``snapshot``: only the owner thread may fork the writer)."""
        for change in later:
            try:
                change()
            except Exception:  # acknowledged and journaled, but not in memory: say so loudly
                log.critical(
                    "an acknowledged write failed to apply; restart to replay it", exc_info=True
                )
        # Only now: a snapshot taken before the reply is remembered (or before the change
        # is applied) would lack the change or its reply, and empty the log that held
        # both; after a crash the change would be lost or a retry applied twice.
        if snapshot:
            self.durability.maybe_snapshot()

    def answer(
        self, req: Request, print_: Fingerprint | None = None
    ) -> tuple[bytes, str, list[Change]]:
        """Authenticate, then answer a retried change from memory or apply the request.

        ``print_``: the request's fingerprint (:func:`~.durability.fingerprint`; None: a
        request the server makes itself). A remembered key whose fingerprint differs is
        another request under a used key, refused (``request_id_reused``), not answered
        with the reply of the one remembered; one remembered without a fingerprint (from
        a journal or snapshot from before them) is answered from memory, as it was.
        """
        try:
            caller = authenticate(self.registry, self.verified, req.agent, req.token)
        except ProtocolError as exc:
            return encode_error(req.id, exc.code, exc.message, exc.details), exc.code, []
        key = (req.client, req.id, req.agent)
        if req.op in MUTATING:
            cached = self.replies.lookup(key)
            if cached is not None:
                kept, was = cached
                if was is not None and print_ is not None and was != print_:
                    reused = RequestIdReusedError.of(req.client, req.id, req.agent)
                    error = encode_error(req.id, reused.code, reused.message, reused.details)
                    return error, reused.code, []
                token = partial(token_for, self.registry.secret)
                return reply_again(req.op, req.args, kept, token), "retry", []
        elif print_ is not None:  # a read that recalls
            return self._recall(req, caller, key, print_)
        reply, code, later = self.apply(req, caller, print_)
        if req.op in MUTATING and (_remembered(req.op, code) or self._refused_after_a_change):
            self.replies.remember(key, kept_reply(req.op, reply), print_)
        return reply, code, later

    def _recall(
        self, req: Request, caller: Caller, key: tuple[int, int, str], print_: Fingerprint
    ) -> tuple[bytes, str, list[Change]]:
        """A read with ``now``: applied, or, sent again (a client's retry after a stall),
        run again as a look, without ``now``.

        A read changes nothing but the recall it records (hits, access time, a journal
        record), so its reply is not kept: the look reads the same items, as the recall
        left them, and answers what the read answered. Counted again, one ``get`` retried
        during a stall took an item's hits from 0 to 4, skewing LFU and LRU evictions.
        """
        seen = self.recalls.lookup(key)
        if seen is not None and seen[1] == print_:
            look = {name: value for name, value in req.args.items() if name != "now"}
            reply, code, later = self.apply(dataclasses.replace(req, args=look), caller)
            return reply, ("retry" if code == "ok" else code), later
        reply, code, later = self.apply(req, caller)
        if code in ("ok", Code.TOO_LARGE):  # recalled (a reply over the limit too)
            self.recalls.remember(key, b"", print_)
        return reply, code, later

    def apply(
        self, req: Request, caller: Caller, print_: Fingerprint | None = None
    ) -> tuple[bytes, str, list[Change]]:
        """Journal the request if it changes anything (with its fingerprint ``print_``),
        then run its handler."""
        ctx = Context(
            self.store,
            self.registry,
            caller,
            self.info,
            verified=self.verified,
            track_recalls=self.durability.journal is not None,
            on_recall=self.metrics.recalled,
            apply_after_reply=True,
        )
        self._refused_after_a_change = False
        try:
            if self.durability.journal is not None:  # it keeps no tokens: check them first
                authenticate_rows(ctx, req.op, req.args)
            logged = self.durability.log_change(req, print_)  # first: a full disk refuses it whole
            changes = self.store.ctx.changes
            try:
                result = HANDLERS[req.op](ctx, req.args)
            except HivememError:
                if req.op in REFUSED_AFTER_A_CHANGE or self.store.ctx.changes != changes:
                    # e.g. a write policy's decision naming no item, in a batch's later
                    # row: the record stays, and its replay changes the store the same way
                    self._refused_after_a_change = req.op in MUTATING
                else:  # refused before any change
                    self.durability.withdraw(logged)
                raise
            finally:
                # Anything else is a bug, which may have changed the store halfway: the
                # record stays, so that a replay, failing the same way, changes it the
                # same way; so do the write decisions it made, journaled right after it.
                self.durability.log_decisions()
            self.durability.log_recalls(req, ctx)
            reply = encode_reply(req.id, result)
            if len(reply) > MAX_MESSAGE_BYTES and req.op not in MUTATING:
                # A client refuses a payload over the limit and would wait for its timeout.
                return (
                    encode_error(
                        req.id,
                        Code.TOO_LARGE,
                        f"reply of {len(reply)} bytes is over the limit: ask for fewer queries, "
                        "a smaller k, hits without vectors, or a page (scan, edges: limit)",
                        {"limit": MAX_MESSAGE_BYTES},
                    ),
                    Code.TOO_LARGE,
                    [],
                )
            return reply, "ok", ctx.deferred
        except HivememError as exc:
            # A refused request leaves nothing for later (REFUSED_AFTER_A_CHANGE: its
            # change, if any, is made already and journaled).
            return encode_error(req.id, exc.code, exc.message, exc.details), exc.code, []
        except Exception as exc:  # a bug must not take the server down
            log.exception("internal error on %s", req.op)
            return (
                encode_error(req.id, Code.INTERNAL, f"internal error: {type(exc).__name__}"),
                Code.INTERNAL,
                [],
            )

    def register_all(self, registrations: list[dict[str, Any]], admin_token: str) -> None:
        """Apply registrations (``register`` op arguments) as the admin's requests, so
        that the journal keeps them; those recovered as they are are passed over.

        Raises:
            HivememError: The journal refused one (it is not applied).
        """
        client = secrets.randbits(63)
        for n, args in enumerate(registrations):
            held = self.registry.agents.get(args["agent_id"])
            if held == Caller(args["agent_id"], frozenset(args["groups"]), args["role"]):
                continue  # recovered as it is (a restart registering the same agents again)
            req = Request(n, client, Op.REGISTER, ADMIN_AGENT, admin_token, args)
            _reply, code, _later = self.answer(req)
            if code != "ok":
                raise HivememError(f"registering agent {args['agent_id']!r} failed: {code}")


def _remembered(op: Op, code: str) -> bool:
    """Whether the reply to a changing request answered with ``code`` is remembered for
    its retries: those whose journal record stays, so that a replay remembers them again
    (applied, ``ok``; failed by a bug, whose record stays, see :meth:`Dispatcher.apply`;
    or refused after a change, ``REFUSED_AFTER_A_CHANGE``).

    A request refused before any change has its record taken back, so a restart could
    not remember its refusal: a resend after a restart from the log alone was applied,
    where the live bus (or one restarted from a snapshot) answered the refusal again. Now
    a resent refusal is decided afresh either way, which is safe, as the refusal changed
    nothing; and a ``journal_write_failed`` is retried.
    """
    if code == JournalWriteError.code:
        return False
    return code in ("ok", Code.INTERNAL) or op in REFUSED_AFTER_A_CHANGE
