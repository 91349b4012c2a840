"""Recovery on start: the snapshot loaded and the journal replayed into the store.

:class:`Recovery` rebuilds one bus server's store, agents and remembered replies from its
data directory when the server starts (:meth:`~hivemem.memory_bus.durability.Durability.recover`
makes one): it loads the last snapshot, replays the records of the log after it through the
same handlers as live requests (with the write decisions journaled beside them played back),
and, when the journal was written under another store configuration, replays it under that
one and takes the state over. It is apart from :mod:`hivemem.memory_bus.durability`, which
journals and snapshots a running server, because it runs once, before the first request,
and needs none of that server's state but the journal and what it rebuilds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hivemem.memory_bus.auth import AgentRegistry
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.data_files import CONFIG_NAME, check_shard
from hivemem.memory_bus.embedder import describe_embedder
from hivemem.memory_bus.errors import ConfigError, DimensionMismatchError, HivememError
from hivemem.memory_bus.handlers import HANDLERS, Context, apply_recalls
from hivemem.memory_bus.interfaces import Caller
from hivemem.memory_bus.journal import Journal
from hivemem.memory_bus.policies.learned import (
    pin_checkpoints,
    pinned_names,
    unpin_checkpoints,
)
from hivemem.memory_bus.proposals import DecisionTape
from hivemem.memory_bus.protocol import Code, Op, encode_error, encode_reply
from hivemem.memory_bus.row_auth import kept_reply
from hivemem.memory_bus.store import MemoryStore
from pydantic import ValidationError

if TYPE_CHECKING:
    from hivemem.memory_bus.durability import RecentReplies

log = logging.getLogger(__name__)

DECIDED = "decided"
"""The op of a journal record holding the write decisions of the record before it."""


class Recovery:
    """The recovery of one bus server's state from its journal, on start.

    Args:
        journal: The server's journal, snapshot and log.
        store: The server's store, rebuilt.
        registry: The server's agents, recovered with the store.
        replies: The server's remembered replies to changes, refilled.
        state: The server's state as a snapshot holds it (written at once after a
            replay under another store configuration).
    """

    def __init__(
        self,
        journal: Journal,
        store: MemoryStore,
        registry: AgentRegistry,
        replies: RecentReplies,
        state: Callable[[], dict[str, Any]],
    ) -> None:
        self.journal = journal
        self.store = store
        self.registry = registry
        self.replies = replies
        self._state = state

    def recover(self) -> None:
        """Load the snapshot and replay the journal through the same handlers, under the
        store configuration the journal was written with.

        The records hold requests, not their outcomes (but for write decisions): the
        same ``write``, replayed under another write policy, eviction policy or capacity,
        would store other items under other ids than its client was told. So a bus
        configured otherwise than the one that wrote the journal (``store_config.json``)
        replays it into a store of the old configuration, takes that state over (as it
        would a snapshot's) and writes a snapshot at once, so that the log starts afresh
        under its own configuration.

        The store must be at the place in a sharded bus the directory was written at
        (``shard.json``, :func:`~hivemem.memory_bus.data_files.check_shard`): the ids
        replayed follow it.

        Raises:
            ConfigError: the journal's store had another dimension, another embedder
                (when it holds items), or its configuration names a policy this process
                cannot make; or was another shard.
        """
        check_shard(self.journal.dir, self.store.shard)
        current = pin_checkpoints(self.store.config.model_dump(mode="json"), self.journal.dir)
        written = self.journal.written_config()
        if written is None or written == current:
            self._recover_into(self.store)
        else:
            self._recover_changed(written, current)
        self.journal.save_config(current)
        kept = set(pinned_names(current))
        for copy in (self.journal.dir / "checkpoints").glob("*.json"):
            if copy.name not in kept:  # pinned for a journal replayed since
                copy.unlink(missing_ok=True)

    def _recover_changed(self, written: dict[str, Any], current: dict[str, Any]) -> None:
        """Recover under the ``written`` configuration, then take the state over."""
        try:
            old_config = StoreConfig.model_validate(unpin_checkpoints(written, self.journal.dir))
        except ValidationError as exc:
            raise ConfigError(
                f"{self.journal.dir / CONFIG_NAME}, the store configuration the journal was "
                f"written under, is not one this version reads: {exc}"
            ) from exc
        if old_config.dim != self.store.config.dim:
            raise ConfigError(
                f"the data directory holds a store of dim {old_config.dim}; this bus has dim "
                f"{self.store.config.dim}"
            )
        changed = ", ".join(changed_fields(written, current))
        ctx = self.store.ctx
        try:
            old = MemoryStore(old_config, ctx.embedder, ctx.limits, embed=ctx.embedder is not None)
        except HivememError as exc:
            raise ConfigError(
                f"the journal in {self.journal.dir} was written under another store "
                f"configuration (it differs in {changed}), which this process cannot make: "
                f"{exc.message}. Start the bus with that configuration (it is in "
                f"{CONFIG_NAME} there), or make its policies available"
            ) from exc
        old.ctx.next_id, old.ctx.id_stride, old.ctx.next_use = ctx.next_id, ctx.id_stride, ctx.next_use  # fmt: skip
        self._recover_into(old)
        # Compared as settings, not as JSON (a field added later has its default). A
        # directory from before the embedder was kept gets the default one.
        if old_config.embedder != self.store.config.embedder and _items(old):
            raise ConfigError(
                f"the data directory {self.journal.dir} holds {_items(old)} item(s) embedded "
                f"by {_described(old_config)}; this bus embeds with "
                f"{_described(self.store.config)}, and the vectors of two embedders do not "
                f"compare. Start it with the embedder in {CONFIG_NAME} there, or on a new "
                f"data directory"
            )
        self.store.set_state(old.get_state())
        log.warning(
            "the store configuration changed since the journal was written (%s): its records "
            "were replayed under the one they were written with; snapshotting now",
            changed,
        )
        self.journal.snapshot(self._state())

    def _recover_into(self, store: MemoryStore) -> None:
        started = time.monotonic()
        state = self.journal.load_snapshot()
        if state is not None:
            store.set_state(state["store"])
            self.registry.load(state["registry"])
            self.replies.load(state["dedup"], state.get("dedup_fingerprints"))
        loaded = time.monotonic()
        replayed = 0
        held: dict[str, Any] | None = None  # a request whose decisions may come next
        for record in self.journal.replay():
            replayed += 1
            if record["op"] == DECIDED:
                if held is not None:
                    self._replay(store, held, record["decisions"])
                held = None
                continue
            if held is not None:
                self._replay(store, held)
            held = record
        if held is not None:
            self._replay(store, held)
        log.info(
            "recovered %d items: %s in %.2f s, %d journal records (%.1f MB) in %.2f s",
            _items(store),
            "a snapshot" if state is not None else "no snapshot",
            loaded - started,
            replayed,
            self.journal.bytes_since_snapshot / 1e6,
            time.monotonic() - loaded,
        )

    def _replay(
        self, store: MemoryStore, record: dict[str, Any], decisions: list[Any] | None = None
    ) -> None:
        """Apply one journal record to ``store`` again; ``decisions``: its write decisions,
        played back."""
        if record["op"] == "recall":
            apply_recalls(store, record["recalls"], float(record["now"]))
            return
        caller = self.registry.agents.get(record["agent"], Caller(record["agent"]))
        ctx = Context(store, self.registry, caller, replaying=True)
        req_id = int(record["id"])
        store.ctx.tape = None if decisions is None else DecisionTape(decisions)
        try:
            reply = encode_reply(req_id, HANDLERS[Op(record["op"])](ctx, record["args"]))
        except DimensionMismatchError as exc:  # refused live before any change: not logged
            got, dim = exc.details["got"], exc.details["expected"]
            raise ConfigError(
                f"the journal holds vectors of dimension {got}; this bus has dim {dim}: start"
                f" it with the configuration that wrote them (dim {got}), or the writes it"
                " acknowledged would be dropped"
            ) from exc
        except HivememError as exc:  # it failed the same way the first time
            reply = encode_error(req_id, exc.code, exc.message, exc.details)
        except Exception as exc:  # a bug, which failed the live request the same way
            log.exception("replaying journal record of request %d failed", req_id)
            reply = encode_error(req_id, Code.INTERNAL, f"internal error: {type(exc).__name__}")
        finally:
            store.ctx.tape = None
        key = (int(record["client"]), req_id, str(record["agent"]))
        self.replies.remember(key, kept_reply(Op(record["op"]), reply), _print_of(record))


def _print_of(record: dict[str, Any]) -> tuple[str, int, int] | None:
    """The fingerprint of a record's request (``Durability.log_change``); None for a
    record from before fingerprints were kept (its reply answers any request under its key)."""
    saved = record.get("fp")
    if isinstance(saved, list) and len(saved) == 2:
        return (str(record["op"]), int(saved[0]), int(saved[1]))
    return None


def _described(config: StoreConfig) -> str:
    return describe_embedder(config.embedder.model_dump(mode="json"))


def _items(store: MemoryStore) -> int:
    """The items ``store`` holds, in all tiers."""
    return sum(int(tier["items"]) for tier in store.stats().values())


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """The dotted paths where two configurations (JSON values) differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            found
            for key in sorted(set(old) | set(new))
            for found in changed_fields(old.get(key), new.get(key), f"{path}{key}.")
        ]
    return [] if old == new else [path.rstrip(".")]
