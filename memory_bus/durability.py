"""The bus server's durability: journal records, forked snapshots, recovery on start.

:class:`Durability` is the part of :class:`~hivemem.memory_bus.server.BusServer` that
works its :class:`~hivemem.memory_bus.journal.Journal` (the files are described in
:mod:`~hivemem.memory_bus.data_files`, their frames in
:mod:`~hivemem.memory_bus.journal_frames`): it journals each request the server applies,
snapshots the server's state from a forked child every ``snapshot_every`` records or once
the log has grown as large as the last snapshot (:attr:`Durability.snapshot_due`), reaps
that child, and on start loads the snapshot and replays the log through the same handlers
as live requests (:class:`~hivemem.memory_bus.recovery.Recovery` does that). The owner
thread makes every call, so nothing here takes a lock. *When* a snapshot may be taken is
the server's to decide (``Dispatcher.settle``: only once the deferred changes of the
request just answered are applied and its reply remembered).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import zlib
from collections import OrderedDict, deque
from typing import Any

from hivemem.memory_bus.auth import AgentRegistry
from hivemem.memory_bus.errors import JournalSyncError, JournalWriteError
from hivemem.memory_bus.forking import fork_to
from hivemem.memory_bus.handlers import Context
from hivemem.memory_bus.journal import FsyncPolicy, Journal
from hivemem.memory_bus.proposals import DecisionTape
from hivemem.memory_bus.protocol import MUTATING, Op, Request
from hivemem.memory_bus.recovery import DECIDED, Recovery
from hivemem.memory_bus.row_auth import journal_args, token_free
from hivemem.memory_bus.store import MemoryStore

log = logging.getLogger(__name__)

SNAPSHOT_LOG_BYTES = 64 << 20
"""The least log since the last snapshot that makes one due by size (Redis's
``auto-aof-rewrite-min-size`` is 64 MB too)."""

UNLOGGED_MAX = 100_000
"""Recall records kept for a journal that cannot take them (a full disk) at most; older
ones are then given up (their reads' access counts are lost at a restart)."""

SNAPSHOT_WAIT_S = 300.0
"""How long a stopping server waits for a snapshot being written before killing the writer."""


ReplyKey = tuple[int, int, str]
"""(client, request id, agent): what a retried request repeats."""

Fingerprint = tuple[str, int, int]
"""(op, length of the request's payload frame, CRC-32 of a few parts of it): what tells a
retry (the same bytes, sent again) from another request under a key used before
(:func:`fingerprint`)."""

FINGERPRINT_PART = 256
"""Bytes of the payload's start, middle and end the fingerprint's CRC covers, at most."""


def fingerprint(op: Op, payload: bytes, agent: str, token: str) -> Fingerprint:
    """The :data:`Fingerprint` of a changing request's payload frame from ``agent``,
    leaving out its ``token`` (a bus restarted under another secret gives new tokens, and
    a client's retry then carries the new one).

    Two writers given one ``client_id`` (a fixed id per agent, say) reuse each other's
    keys, and the second one's write was "acknowledged" with the first one's reply and
    never applied. A retry resends the same request, so a request under a remembered key
    whose fingerprint differs is another request: refused, not answered from memory.

    Not a hash of the whole payload: a 64-item ``write_many`` is answered in ~200 us,
    and hashing its ~30 KB would add more than the microsecond the hot path may spend
    here. Its op, length and a few parts tell apart nearly any two requests (two that
    differ only elsewhere in equal-length bodies are taken for one): the arguments after
    the token, and the middle and end; of a large payload, whose header fields (agent,
    token) lie in its first quarter, the middle and end alone (finding the token cost
    as much again).
    """
    size = len(payload)
    part = FINGERPRINT_PART
    if size > 16 * part and 4 * (len(agent) + len(token) + 64) < size:
        middle = size // 2
        return (op.value, size, zlib.crc32(payload[middle : middle + part] + payload[-part:]))
    secret = token.encode()
    at = payload.find(secret)  # near the start: the header fields come first
    if at < 0:
        at, secret = 0, b""
    after = at + len(secret)
    if size <= 4 * part:
        return (op.value, size, zlib.crc32(payload[:at] + payload[after:]))
    middle = size // 2
    parts = payload[:at] + payload[after : after + part] + payload[middle : middle + part]
    return (op.value, size, zlib.crc32(parts + payload[-part:]))


class RecentReplies:
    """The replies to the last ``size`` changes, by :data:`ReplyKey`: a retried change is
    answered from here instead of being applied again. Saved with snapshots.

    Each agent keeps at most a tenth of them (its last ones): one agent's flood of
    changes pushed every other agent's replies out, so that their retries were applied
    twice. Each reply is kept with its request's :data:`Fingerprint` (None: a request
    recovered from a journal record or snapshot written before fingerprints were kept,
    or made by the server itself), to tell a retry from a key used again.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.per_agent = max(1, size // 10)
        self._replies: OrderedDict[ReplyKey, tuple[bytes, Fingerprint | None]] = OrderedDict()
        self._by_agent: dict[str, deque[ReplyKey]] = {}  # each agent's keys, oldest first

    def get(self, key: ReplyKey) -> bytes | None:
        """The reply to ``key``'s change, if it is still remembered."""
        kept = self._replies.get(key)
        return None if kept is None else kept[0]

    def lookup(self, key: ReplyKey) -> tuple[bytes, Fingerprint | None] | None:
        """The reply to ``key``'s change and its request's fingerprint, if remembered."""
        return self._replies.get(key)

    def remember(self, key: ReplyKey, reply: bytes, print_: Fingerprint | None = None) -> None:
        """Keep ``reply`` (to a request of fingerprint ``print_``), forgetting the agent's
        oldest past ``per_agent`` and the oldest of all past ``size``."""
        replies = self._replies
        if key not in replies:
            mine = self._by_agent.get(key[2])
            if mine is None:
                mine = self._by_agent[key[2]] = deque()
            mine.append(key)
            if len(mine) > self.per_agent:
                del replies[mine.popleft()]
        replies[key] = (reply, print_)
        if len(replies) > self.size:
            # the oldest of all is its agent's oldest: both keep the order keys came in
            oldest, _ = replies.popitem(last=False)
            theirs = self._by_agent[oldest[2]]
            theirs.popleft()
            if not theirs:
                del self._by_agent[oldest[2]]

    def to_state(self) -> list[list[Any]]:
        return [[c, i, a, reply] for (c, i, a), (reply, _) in self._replies.items()]

    def fingerprints_state(self) -> list[list[Any] | None]:
        """The fingerprints of :meth:`to_state`'s replies, in its order (a list of their
        own in snapshots: a bus from before them reads the replies as it always did)."""
        return [None if p is None else list(p) for _, p in self._replies.values()]

    def load(self, state: list[list[Any]], prints: list[Any] | None = None) -> None:
        """Replace what is remembered with a snapshot's (:meth:`to_state`, and
        :meth:`fingerprints_state`: None for a snapshot from before them, whose replies
        are then answered to any request under their keys, as they were)."""
        self._replies, self._by_agent = OrderedDict(), {}
        if prints is None or len(prints) != len(state):
            prints = [None] * len(state)
        for (c, i, a, r), p in zip(state, prints, strict=True):
            # (an older bus kept register's tokens: not any more)
            self.remember((int(c), int(i), str(a)), token_free(bytes(r)), _print_of(p))


def _print_of(saved: Any) -> Fingerprint | None:
    """A fingerprint as a snapshot keeps it (a list), or None."""
    if isinstance(saved, list | tuple) and len(saved) == 3:
        return (str(saved[0]), int(saved[1]), int(saved[2]))
    return None


class Durability:
    """The journal records, snapshots and recovery of one bus server.

    Args:
        journal: Where acknowledged changes are logged; None keeps everything in memory
            (every method then does nothing).
        store: The server's store, saved in snapshots and rebuilt on recovery.
        registry: The server's agents, saved and recovered with the store.
        replies: The server's remembered replies to changes (for idempotent retries),
            saved with the store and refilled on recovery.
        snapshot_every: Journal records between snapshots.
        snapshot_log_bytes: Also snapshot once the log since the last snapshot holds this
            many bytes and as many as that snapshot (0: by records only). See
            :attr:`snapshot_due`.
        fork_snapshots: Write snapshots from a forked process (see :meth:`maybe_snapshot`);
            False writes them on the owner thread, which stalls every client meanwhile.
    """

    def __init__(
        self,
        journal: Journal | None,
        store: MemoryStore,
        registry: AgentRegistry,
        replies: RecentReplies,
        *,
        snapshot_every: int,
        fork_snapshots: bool,
        snapshot_log_bytes: int = 0,
    ) -> None:
        self.journal = journal
        self.store = store
        self.registry = registry
        self.replies = replies
        self.snapshot_every = snapshot_every
        self.snapshot_log_bytes = snapshot_log_bytes
        self.fork_snapshots = fork_snapshots and hasattr(os, "fork")
        self.snapshots = 0  # snapshots completed
        self.snapshot_failures = 0  # snapshots begun and not completed (the log kept all)
        self._snapshot: tuple[int, int] | None = None  # (writer pid, seq) of one under way
        # recall records the journal could not take yet, oldest first (see log_recalls)
        self._unlogged: deque[dict[str, Any]] = deque()
        self.recalls_dropped = 0  # recall records given up past UNLOGGED_MAX
        self._retry_at = 0  # the journal's seq before which no snapshot is tried again
        self._next_id = 0  # the store's next id before the change logged last
        # Set by the owner thread while it handles a group of requests (see commit).
        self.deferring = False
        self._deferred = False  # a change was logged unsynced since the last commit

    def log_change(self, req: Request, print_: Fingerprint | None = None) -> int | None:
        """Journal a changing request before it is applied; its record's seq (None: not
        journaled). Give the seq to :meth:`withdraw` if the request is then refused.
        ``print_``: its fingerprint, kept in the record (``fp``: length and CRC) so that
        a replay remembers its reply with it.

        Logged first, so that a journal that cannot take the record (a full disk) refuses
        the request before anything of it is applied: the store never holds a change the
        log lacks.

        Raises:
            JournalWriteError: nothing was logged; the request must not be applied.
        """
        journal = self.journal
        if journal is None or req.op not in MUTATING:
            return None
        self._log_unlogged()
        record: dict[str, Any] = {
            "op": req.op.value,
            "agent": req.agent,
            "client": req.client,
            "id": req.id,
            "args": journal_args(req.op, req.args),  # no tokens: the files hold none
        }
        if print_ is not None:
            record["fp"] = [print_[1], print_[2]]
        seq = journal.append(record, sync=not self.deferring)
        self._deferred = self._deferred or self.deferring
        self.store.ctx.tape = DecisionTape()
        self._next_id = self.store.ctx.next_id
        return seq

    def withdraw(self, seq: int | None) -> None:
        """Take back the record of a request that was refused after :meth:`log_change`,
        and any ids it drew: a replay, which never sees it, must give every later write
        the id its reply gave (a refusal that had drawn one shifted them all by one)."""
        self.store.ctx.tape = None
        if seq is None or self.journal is None:
            return
        if self.journal.retract(seq):
            self.store.ctx.next_id = self._next_id
        else:  # the record stays, and its replay draws what it drew
            log.warning("could not take back journal record %d; a replay refuses it again", seq)

    @property
    def commits_in_groups(self) -> bool:
        """Whether each change waits for an fsync before it is acknowledged (``always``):
        then the owner thread handles the requests waiting at once with :attr:`deferring`
        set, and :meth:`commit` fsyncs them all before any of their replies is sent."""
        return self.journal is not None and self.journal.policy is FsyncPolicy.ALWAYS

    @property
    def uncommitted(self) -> bool:
        """Whether a change logged while :attr:`deferring` awaits :meth:`commit`."""
        return self._deferred

    def commit(self) -> None:
        """Make the changes logged while :attr:`deferring` durable (one fsync for all).

        Raises:
            JournalSyncError: the fsync failed. The changes are applied in memory and
                it is unknown which reached the disk: none may be acknowledged, and the
                server must stop (a restart replays what the disk holds).
        """
        if self._deferred and self.journal is not None:
            self._deferred = False
            self.journal.sync()

    def log_decisions(self) -> None:
        """Journal the write policy's decisions of the request just logged by
        :meth:`log_change`, right after its record (if it made any; see
        :class:`~hivemem.memory_bus.proposals.DecisionTape`).

        Its changes are made already. If the journal cannot take the record, a replay
        asks the policy again, as it did before decisions were journaled.
        """
        tape, self.store.ctx.tape = self.store.ctx.tape, None
        if tape is None or not tape.made or self.journal is None:
            return
        try:
            self.journal.append(
                {"op": DECIDED, "decisions": tape.to_record()}, sync=not self.deferring
            )
        except JournalWriteError as exc:
            log.error("%s; a replay decides this request's writes again", exc.message)

    def log_recalls(self, req: Request, ctx: Context) -> None:
        """Journal what a read recalled (its items' access counts and times), if anything.

        The read has been answered from memory already. If the journal cannot take the
        record, it waits, in order, for the next record that can be written (reads go on
        being answered meanwhile; changes are refused until the log takes records again).
        """
        if self.journal is None or not ctx.recalls:
            return
        if len(self._unlogged) >= UNLOGGED_MAX:
            self._unlogged.popleft()
            self.recalls_dropped += 1
            if self.recalls_dropped == 1:
                log.error(
                    "over %d reads wait for the journal; the oldest are given up", UNLOGGED_MAX
                )
        now = req.args.get("now", 0.0)
        self._unlogged.append({"op": "recall", "recalls": ctx.recalls, "now": now})
        try:
            self._log_unlogged()
        except JournalWriteError as exc:
            if len(self._unlogged) == 1:
                log.warning("%s; reads are kept in memory until it can be written", exc.message)

    def _log_unlogged(self) -> None:
        while self._unlogged:  # a read waits for no fsync: the next change's syncs these
            self.journal.append(self._unlogged[0], sync=False)  # type: ignore[union-attr]
            self._unlogged.popleft()

    @property
    def snapshot_due(self) -> bool:
        """Whether :meth:`maybe_snapshot` would start a snapshot now.

        One is due after ``snapshot_every`` records, or once the log since the last
        snapshot holds ``snapshot_log_bytes`` and at least as many bytes as that snapshot
        (Redis rewrites its append-only file by the same rule: ``auto-aof-rewrite-min-size``
        with ``auto-aof-rewrite-percentage 100``). By records alone, a log of 64-item
        batches reached 5 GB (3.2 million items) before its first snapshot, all of it
        read again at every restart; by size, a restart reads at most about twice the
        store, and the snapshots' cost stays in proportion to the writes.
        """
        journal = self.journal
        if journal is None or self._snapshot is not None or journal.seq < self._retry_at:
            return False
        if journal.records_since_snapshot >= self.snapshot_every:
            return True
        logged = journal.bytes_since_snapshot
        return 0 < self.snapshot_log_bytes <= logged and logged >= journal.snapshot_bytes

    def maybe_snapshot(self) -> None:
        """Snapshot once one is due (:attr:`snapshot_due`; one snapshot at a time).

        The state is written by a forked child: fork copies no memory (pages are shared
        copy-on-write), so the owner thread pays for the fork alone, not for packing
        and writing the whole store (a store of 20,000 384-float items: 66 MB, 0.6 s
        here, 1.6 s on a loaded machine, during which every client waited). The child
        sees the store exactly as it was after the last journaled record, since the
        owner thread forks between requests. Where fork is not available, or fails, the
        owner thread writes the snapshot itself.
        """
        journal = self.journal
        if journal is None or not self.snapshot_due:
            return
        try:
            seq = journal.begin_snapshot()
        except JournalSyncError:  # the journal takes no more records: the server stops
            return
        except OSError as exc:
            self._snapshot_failed(exc)
            return
        # The snapshot holds what the recall records not yet logged recorded.
        self._unlogged.clear()
        if self.fork_snapshots:
            pid = fork_to(lambda: journal.write_snapshot(self._state(), seq))
            if pid is not None:
                self._snapshot = (pid, seq)
                return
        try:
            journal.write_snapshot(self._state(), seq)
        except Exception as exc:  # a full disk, or a state msgpack cannot take: serve on
            self._snapshot_failed(exc)
            return
        journal.end_snapshot(seq)
        self.snapshots += 1

    def _snapshot_failed(self, exc: Exception) -> None:
        """Serve on without the snapshot: the log keeps every record it was to hold."""
        assert self.journal is not None
        self.snapshot_failures += 1
        self._retry_at = self.journal.seq + max(self.snapshot_every, 1)
        log.error(
            "snapshot failed (%s); the log keeps every record, and the next snapshot comes "
            "after record %d",
            getattr(exc, "strerror", None) or exc,
            self._retry_at,
        )

    def reap_snapshot(self, wait: float = 0.0) -> None:
        """Finish the snapshot a child is writing once it has exited.

        ``wait``: seconds to wait for it; a writer still at work then is killed (its
        snapshot is lost, not the records: the log keeps them).
        """
        if self._snapshot is None or self.journal is None:
            return
        pid, seq = self._snapshot
        deadline = time.monotonic() + wait
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done or time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            if not done and wait:
                log.error("the snapshot writer (pid %d) took over %.0f s; killed", pid, wait)
                os.kill(pid, signal.SIGKILL)
                done, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else: its outcome is unknown
            done, status = pid, 1 << 8
        if not done:
            return
        self._snapshot = None
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self.journal.end_snapshot(seq)
            self.snapshots += 1
        else:  # nothing is lost: the log keeps every record until a snapshot holds them
            self.snapshot_failures += 1
            log.error(
                "the snapshot writer (pid %d) failed (exit %d); the next one retries", pid, code
            )

    def _state(self) -> dict[str, Any]:
        return {
            "store": self.store.get_state(),
            "registry": self.registry.to_state(),
            "dedup": self.replies.to_state(),
            "dedup_fingerprints": self.replies.fingerprints_state(),
        }

    def recover(self) -> None:
        """Load the snapshot and replay the journal through the same handlers, under the
        store configuration the journal was written with (see
        :meth:`~hivemem.memory_bus.recovery.Recovery.recover`).

        Raises:
            ConfigError: the journal's store had another dimension, another embedder
                (when it holds items), or its configuration names a policy this process
                cannot make.
        """
        if self.journal is None:
            return
        Recovery(self.journal, self.store, self.registry, self.replies, self._state).recover()
