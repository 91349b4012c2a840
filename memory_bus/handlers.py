"""What each bus op does to the store: decode arguments, call the tier, encode the result.

One function per op, each taking the store, the authenticated caller and the decoded
arguments. The server calls these on its owner thread, both for live requests and when
replaying the journal, so there is one code path for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hivemem.memory_bus.arguments import (
    batch,
    field,
    now_of,
    plain_number,
    recall_time,
    tier_of,
)
from hivemem.memory_bus.auth import AgentRegistry
from hivemem.memory_bus.batch import WriteBatch
from hivemem.memory_bus.codec import (
    column_vectors,
    decode_item_arg,
    decode_new_item,
    encode_batch_result,
    encode_hit,
    encode_item,
    encode_scan_page,
    encode_write_result,
    vector_from_bytes,
)
from hivemem.memory_bus.errors import AccessDeniedError, HivememError, InvalidInputError, in_row
from hivemem.memory_bus.graph_handlers import (
    add_edge,
    edges,
    invalidate_edge,
    neighbors,
    promote,
    retrieve,
)
from hivemem.memory_bus.interfaces import Caller, Hit, SearchRequest, WriteRequest
from hivemem.memory_bus.item import TierName, check_text
from hivemem.memory_bus.protocol import (
    MAX_BATCH,
    NUMBER,
    PROTOCOL_VERSION,
    WRITE_COLUMNS,
    Code,
    Op,
    ProtocolError,
)
from hivemem.memory_bus.row_auth import authenticate, column_callers
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.tiers import Defer, recall
from hivemem.memory_bus.topics import subscription_topic, topic_event_seq

Recalls = list[tuple[str, str, list[int]]]
"""(tier, namespace, item ids) recalled by a read: the journal keeps these."""


class Context:
    """What a handler may use besides its arguments.

    Args:
        store: The store the handler works on.
        registry: Agents known to the bus (to authenticate batch entries).
        caller: Who sent the request.
        info: Extra facts ``ping`` reports.
        verified: ``(agent, token)`` pairs already authenticated, shared between
            requests (see :func:`authenticate`); None checks every token afresh.
        track_recalls: Whether reads note what they recalled (only the journal needs it).
        on_recall: Called with ``(tier, now, hits of each query)`` after every search
            (the server's metrics; None when replaying the journal).
        apply_after_reply: Let writes leave the changes whose outcome is decided in
            :attr:`deferred` for the caller to run once the reply is sent (see
            :mod:`hivemem.memory_bus.server`); False applies everything at once.
        replaying: Whether the request is a journal record played again: the agents its
            batch rows name were authenticated when it was first received, and the journal
            keeps no tokens (:func:`journal_args`), so rows are taken on trust.
    """

    def __init__(
        self,
        store: MemoryStore,
        registry: AgentRegistry,
        caller: Caller,
        info: dict[str, Any] | None = None,
        verified: set[tuple[str, str]] | None = None,
        track_recalls: bool = True,
        on_recall: Callable[[str, float, list[list[Hit]]], None] | None = None,
        apply_after_reply: bool = False,
        replaying: bool = False,
    ) -> None:
        self.store = store
        self.replaying = replaying
        self.info = info or {}
        self.registry = registry
        self.caller = caller
        self.verified = verified
        self.track_recalls = track_recalls
        self.recalls: Recalls = []
        self.on_recall = on_recall
        self.deferred: list[Callable[[], None]] = []
        self.defer: Defer | None = self.deferred.append if apply_after_reply else None

    def entry_caller(self, entry: dict[str, Any]) -> Caller:
        """The caller of one batch entry: its own agent and token if given, else the request's.

        An agent host batches the reads and writes of many agents into one request; each
        entry then names its agent and carries that agent's token.
        """
        if "agent" not in entry:
            return self.caller
        agent, token = entry["agent"], entry.get("token", "" if self.replaying else None)
        if type(agent) is not str or type(token) is not str:
            agent, token = field(entry, "agent", str), field(entry, "token", str, "")
        return self.row_caller(agent, token)

    def row_caller(self, agent: str, token: str) -> Caller:
        """The caller a batch row names: its token checked, or taken on trust when
        :attr:`replaying` (the registry still gives its groups and role)."""
        if self.replaying:
            return self.registry.agents.get(agent) or Caller(agent)
        return authenticate(self.registry, self.verified, agent, token)

    def query_vectors(self, queries: list[dict[str, Any]], where: str = "queries") -> list[Any]:
        """Each query's vector: its ``vector`` (float32 bytes) as sent, or its ``text``
        embedded by the store's embedder (all texts in one call); None where a query
        has no text (its ``vector`` is read as before).

        Raises:
            ProtocolError: a query with both a vector and a text.
            InvalidInputError: a text that is not a str, too long, or a store that does
                not embed.
        """
        texted = [i for i, q in enumerate(queries) if q.get("text") is not None]
        out: list[Any] = [None] * len(queries)
        if not texted:
            return out
        limits, texts = self.store.ctx.limits, []
        for i in texted:
            name = f"{where}[{i}].text" if where else "text"
            if queries[i].get("vector") is not None:
                raise ProtocolError(Code.BAD_REQUEST, "a query has a vector or a text, not both", field=name)  # fmt: skip
            texts.append(check_text(queries[i]["text"], limits, name))
        for i, vector in zip(texted, self.store.embed(texts), strict=True):
            out[i] = vector
        return out

    def query_vector(self, args: dict[str, Any]) -> np.ndarray:
        """The query of a single search: its ``vector``, or its ``text`` embedded."""
        [vector] = self.query_vectors([args], where="")
        return vector_from_bytes(field(args, "vector", bytes)) if vector is None else vector

    def recalled(self, tier: TierName, now: float | None, results: list[list[Hit]]) -> None:
        """What the queries of one read found: noted for the journal, and counted (a look,
        ``now`` None, recalls nothing)."""
        if now is None:
            return
        for hits in results:
            self.note(tier, hits)
        if self.on_recall is not None:
            self.on_recall(tier.value, now, results)

    def note(self, tier: TierName, hits: list[Hit]) -> None:
        """Remember which items a read recalled (for the journal)."""
        if not self.track_recalls:
            return
        by_ns: dict[str, list[int]] = {}
        for hit in hits:
            by_ns.setdefault(hit.item.namespace, []).append(hit.id)
        self.recalls.extend((tier.value, ns, ids) for ns, ids in by_ns.items())


Handler = Callable[[Context, dict[str, Any]], Any]


def ping(ctx: Context, args: dict[str, Any]) -> Any:
    """The bus's protocol version, dimension, embedder, event address and epoch, and its
    place in a sharded bus (``shard``: ``[index, count]``, ``[0, 1]`` unsharded), which a
    sharded client checks against the order it lists the shards in."""
    return {
        "version": PROTOCOL_VERSION,
        "agent": ctx.caller.agent_id,
        "dim": ctx.store.config.dim,
        "embedder": ctx.store.embedder_settings,
        "shard": list(ctx.store.shard),
        **ctx.info,
    }


def register(ctx: Context, args: dict[str, Any]) -> Any:
    if not ctx.registry.is_admin(ctx.caller):
        raise AccessDeniedError(ctx.caller.agent_id, "registry", "agents", "register agents in")
    groups = field(args, "groups", list, [])
    if not all(isinstance(g, str) for g in groups):
        raise ProtocolError(Code.BAD_REQUEST, "groups must be a list of str", field="groups")
    return {
        "token": ctx.registry.register(
            field(args, "agent_id", str), groups, field(args, "role", str, "agent")
        )
    }


def write(ctx: Context, args: dict[str, Any]) -> Any:
    tier = ctx.store.tier(tier_of(args))
    item = decode_item_arg(args, "item")
    return encode_write_result(
        tier.write(
            ctx.caller, field(args, "namespace", str), item, now=now_of(args), defer=ctx.defer
        )
    )


def write_many(ctx: Context, args: dict[str, Any]) -> Any:
    tier = ctx.store.tier(tier_of(args))
    if "columns" in args:
        if "items" in args:
            raise ProtocolError(Code.BAD_REQUEST, "give the batch as items or as columns, not both")
        columns = _write_batch(ctx, field(args, "columns", dict))
        return encode_batch_result(tier.write_batch(columns, now=now_of(args), defer=ctx.defer))
    requests = []
    for i, row in enumerate(batch(args, "items")):
        try:
            requests.append(_write_request(ctx, _entry(row)))
        except HivememError as exc:
            raise in_row(exc, i) from None
    results = tier.write_many(requests, now=now_of(args), defer=ctx.defer)
    return [encode_write_result(r) for r in results]


def _write_batch(ctx: Context, columns: dict[str, Any]) -> WriteBatch:
    """A columnar ``write_many`` as a batch for the tier (which checks the values)."""
    unknown = set(columns) - WRITE_COLUMNS
    if unknown:
        name = sorted(unknown)[0]
        raise ProtocolError(
            Code.BAD_REQUEST, f"unknown column {name!r}", field=f"columns.{name}",
            known=sorted(WRITE_COLUMNS),
        )  # fmt: skip
    texts = field(columns, "text", list)
    n = len(texts)
    if n > MAX_BATCH:
        raise ProtocolError(
            Code.TOO_LARGE, f"{n} rows in 'columns'", field="columns.text", limit=MAX_BATCH, got=n
        )
    namespace = columns.get("namespace")
    return WriteBatch(
        callers=column_callers(ctx, columns.get("agent"), columns.get("token"), n),
        namespaces=[namespace] * n if type(namespace) is str else field(columns, "namespace", list),
        texts=texts,
        vectors=column_vectors(columns.get("vector"), n),
        metas=columns.get("meta"),
        importance=columns.get("importance"),
        valid_from=columns.get("valid_from"),
        valid_to=columns.get("valid_to"),
        levels=columns.get("level"),
    )


def _write_request(ctx: Context, entry: dict[str, Any]) -> WriteRequest:
    caller = ctx.entry_caller(entry)
    namespace = entry.get("namespace")
    if type(namespace) is not str:
        namespace = field(entry, "namespace", str)
    item = entry.get("item")
    if type(item) is not dict:
        item = field(entry, "item", dict)
    return WriteRequest(caller, namespace, decode_new_item(item))


def _entry(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProtocolError(Code.BAD_REQUEST, "batch entries must be maps")
    return raw


def get(ctx: Context, args: dict[str, Any]) -> Any:
    tier_name = tier_of(args)
    now = recall_time(args)
    item = ctx.store.tier(tier_name).get(
        ctx.caller, field(args, "namespace", str), field(args, "item_id", int), now=now
    )
    if now is not None:
        ctx.recalls.append((tier_name.value, item.namespace, [item.id]))
    return encode_item(item)


def search(ctx: Context, args: dict[str, Any]) -> Any:
    tier_name = tier_of(args)
    vectors = field(args, "vectors", bool, True)
    compact = field(args, "compact", bool, False)
    hits = ctx.store.tier(tier_name).search(
        ctx.caller,
        field(args, "namespace", str),
        ctx.query_vector(args),
        field(args, "k", int, 10),
        now=recall_time(args),
        as_of=field(args, "as_of", NUMBER, None),
    )
    ctx.recalled(tier_name, recall_time(args), [hits])
    return [encode_hit(h, vectors, compact) for h in hits]


def search_many(ctx: Context, args: dict[str, Any]) -> Any:
    tier_name = tier_of(args)
    vectors = field(args, "vectors", bool, True)
    compact = field(args, "compact", bool, False)
    queries = [_entry(x) for x in batch(args, "queries")]
    embedded = ctx.query_vectors(queries)
    requests = []
    for i, (query, vector) in enumerate(zip(queries, embedded, strict=True)):
        try:
            requests.append(_search_request(ctx, query, vector))
        except HivememError as exc:
            raise in_row(exc, i, "queries") from None
    try:
        results = ctx.store.tier(tier_name).search_many(requests, now=recall_time(args))
    except HivememError as exc:  # a query's k, as_of or access: the tier says which
        row = exc.details.get("row")
        if isinstance(row, int):
            raise in_row(exc, row, "queries") from None
        raise
    ctx.recalled(tier_name, recall_time(args), results)
    return [[encode_hit(h, vectors, compact) for h in hits] for hits in results]


def _search_request(ctx: Context, query: dict[str, Any], embedded: Any = None) -> SearchRequest:
    """One query of ``search_many``; ``embedded``: its text's vector, if it had a text."""
    caller = ctx.entry_caller(query)
    get = query.get
    namespace, vector, k, as_of = get("namespace"), get("vector"), get("k"), get("as_of")
    if (
        type(namespace) is str
        and type(vector) is bytes
        and not len(vector) % 4
        and (k is None or type(k) is int)
        and (as_of is None or plain_number(as_of))
    ):  # the common case, accepted exactly as the checks below would accept it
        return SearchRequest(
            caller,
            namespace,
            np.frombuffer(vector, dtype="<f4").astype(np.float32),
            10 if k is None else k,
            as_of,
        )
    return SearchRequest(
        caller,
        field(query, "namespace", str),
        vector_from_bytes(field(query, "vector", bytes)) if embedded is None else embedded,
        field(query, "k", int, 10),
        field(query, "as_of", NUMBER, None),
    )


def update(ctx: Context, args: dict[str, Any]) -> Any:
    changes = dict(field(args, "changes", dict))
    if any(type(name) is not str for name in changes):
        raise InvalidInputError("changes", f"keys must be field names (str), got {list(changes)}")
    if "vector" in changes:
        changes["vector"] = vector_from_bytes(changes["vector"], "changes.vector")
    item = ctx.store.tier(tier_of(args)).update(
        ctx.caller,
        field(args, "namespace", str),
        field(args, "item_id", int),
        expected_version=field(args, "expected_version", int),
        now=now_of(args),
        **changes,
    )
    return encode_item(item)


def delete(ctx: Context, args: dict[str, Any]) -> Any:
    ctx.store.tier(tier_of(args)).delete(
        ctx.caller, field(args, "namespace", str), field(args, "item_id", int), now=now_of(args)
    )
    return None


def scan(ctx: Context, args: dict[str, Any]) -> Any:
    page = ctx.store.tier(tier_of(args)).scan(
        ctx.caller,
        field(args, "namespace", str),
        after=field(args, "after", int, 0),
        limit=field(args, "limit", int, 100),
        as_of=field(args, "as_of", NUMBER, None),
    )
    return encode_scan_page(page, field(args, "vectors", bool, True))


def history(ctx: Context, args: dict[str, Any]) -> Any:
    return ctx.store.tier(tier_of(args)).history(
        ctx.caller, field(args, "namespace", str), field(args, "item_id", int)
    )


def stats(ctx: Context, args: dict[str, Any]) -> Any:
    """The whole store's counts for the admin; for an agent, those of what it may read."""
    return ctx.store.stats(None if ctx.registry.is_admin(ctx.caller) else ctx.caller)


def subscribe(ctx: Context, args: dict[str, Any]) -> Any:
    """Check that the caller may receive the events of ``topics``.

    Returns the event socket's address, each topic's prefix there (what the
    subscriber's SUB must also subscribe to, since a SUB drops what matches none of its
    own prefixes) and, for a topic of one namespace, its last event number now (``seqs``;
    None for a whole tier): the subscriber counts on from it, so that events it misses
    while its subscription is being set up show as a gap; and the ``epoch`` of the
    numbers (marks carry it: another one means they started again).

    The event socket enforces the same check on each subscription it receives (see
    :func:`subscription_topic`); asking here first gives a refused topic a clear error.
    """
    topics = batch(args, "topics")
    if not all(isinstance(topic, str) for topic in topics):
        raise ProtocolError(Code.BAD_REQUEST, "topics must be a list of str", field="topics")
    prefixes = [subscription_topic(ctx.store, ctx.registry, ctx.caller, t) for t in topics]
    return {
        "pub": ctx.info.get("pub"),
        "prefixes": prefixes,
        "seqs": _event_seqs(ctx, topics),
        "epoch": ctx.info.get("epoch"),
    }


REFUSED_AFTER_A_CHANGE = frozenset({Op.PROMOTE})
"""Ops that may be refused after they changed the store: ``promote`` writes the parent
first, and refuses if the write policy neither added nor updated it (the decision is
counted). The server keeps the journal record of such a refusal, so that a replay, refused
the same way, changes the store the same way. Any other refused request keeps its record
too if it emitted an event before it was refused (a write policy's decision naming no
item, in a batch's later row: ``StoreContext.changes``); else its record is taken back."""


def _event_seqs(ctx: Context, topics: list[str]) -> list[int | None]:
    """The last event number of each topic's namespace (0: none yet; None: a whole tier)."""
    seqs = (topic_event_seq(ctx.store, topic) for topic in topics)
    return [None if found is None else found[2] for found in seqs]


HANDLERS: dict[Op, Handler] = {
    Op.PING: ping,
    Op.REGISTER: register,
    Op.WRITE: write,
    Op.WRITE_MANY: write_many,
    Op.GET: get,
    Op.SEARCH: search,
    Op.SEARCH_MANY: search_many,
    Op.SCAN: scan,
    Op.UPDATE: update,
    Op.DELETE: delete,
    Op.HISTORY: history,
    Op.STATS: stats,
    Op.ADD_EDGE: add_edge,
    Op.INVALIDATE_EDGE: invalidate_edge,
    Op.EDGES: edges,
    Op.NEIGHBORS: neighbors,
    Op.PROMOTE: promote,
    Op.RETRIEVE: retrieve,
    Op.SUBSCRIBE: subscribe,
}


def apply_recalls(store: MemoryStore, recalls: list[Any], now: float) -> None:
    """Replay the recall bookkeeping of a journaled read."""
    for tier, namespace, ids in recalls:
        ns = store.tier(tier).namespaces.get(namespace)
        for item_id in ids:
            item = None if ns is None else ns.item(item_id)
            if item is not None:
                recall(item, now)
