"""A sharded bus answers as one bus does: the same random ops, compared reply by reply.

Each seed drives one sequence of ops through a client of one ``BusServer`` and through
a sharded client of 2 or 3 (real servers on 127.0.0.1, one secret, so every agent's
token is the same on both), with several agents and groups over the private, shared
and graph tiers, small capacities (evictions happen) and ``dedup`` on the shared tier
(NOOPs and UPDATEs). Every reply must be the same, or the same error (code, field and
row). Item and edge ids are handed out by the servers, with another spacing on shards:
the test keeps a one-to-one map from the single bus's ids to the sharded bus's, bound
where an id is made (an ADD, a promote, an edge) and checked everywhere else, so an id
in a reply must be the one the same item has on the other bus. Ids never handed out
(``UNKNOWN`` and above) are sent as they are to both.

The documented differences (``docs/protocol.md``, write_many and search_many), which the
test accepts and no other: a batch over several shards is not atomic. When a
``write_many`` fails, the error must be the single bus's, and the rows the shards
applied (``details["applied"]``) are then written on the single bus too, so that both
hold the same again; when a ``search_many`` fails, the queries the other shards answered
(``details["answered"]``) counted as recalls there, and are asked of the single bus at
the same ``now``. With bad rows on several shards the error is the first refused row's
(one bus names the first it finds: every row's access before any value), so its code
must be that of one of the refused parts; and a columnar batch with a column of the
wrong length checked after access (meta, importance, valid_*) is refused by the sharded
client before it is sent. A failure prints the seed and the ops so far.

Seeds 103 and 106 (3 and 2 shards) found that one bus limited the evictions of every
namespace of a graph ``write_many`` to the levels a level-limited writer (carol, a
``scout``) may touch, where her rows were in one namespace only; a shard, seeing its own
rows' writers, evicted as they may. Now each namespace evicts as its own rows' writers
may, on one bus too (``VectorTier.evicting_for``); seeds 119, 134 and 140 found the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import AccessConfig, GraphConfig, StoreConfig, TierConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.interfaces import Hit, ScanPage, WriteResult
from hivemem.memory_bus.item import Item, NewItem, WriteOp
from hivemem.memory_bus.ops import OnBehalf
from hivemem.memory_bus.placement import shard_of
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.sharding import CHECKED_AFTER_ACCESS
from hivemem.memory_bus.store import MemoryStore

DIM = 16
UNKNOWN = 10**6
CONFIG = StoreConfig(
    dim=DIM,
    private=TierConfig(capacity=4, eviction="lru"),
    shared=TierConfig(capacity=5, eviction="random", write_policy="dedup"),
    graph=GraphConfig(capacity=6, eviction="lfu"),
    access=AccessConfig(graph_levels={"scout": [0, 1]}),
)
AGENTS = {  # agent: (groups, role)
    "alice": (["g0", "g1", "g2"], "agent"),
    "bob": (["g1", "g3"], "agent"),
    "carol": (["g2", "g3", "g4"], "scout"),
    "dave": ([], "agent"),
}
GROUPS = ["g0", "g1", "g2", "g3", "g4", "outside"]
WORDS = ["door", "red", "key", "hall", "lamp"]
Tr = Callable[[int], Any]


@dataclass
class Side:
    """One bus (one server or several shards) and a client handle per agent."""

    servers: list[BusServer]
    admin: MemoryClient
    agents: dict[str, MemoryClient]

    def close(self) -> None:
        self.admin.close()
        for server in self.servers:
            server.stop()


def start_side(secret: bytes, shards: int) -> Side:
    def store(i: int) -> MemoryStore:
        made = MemoryStore(CONFIG)
        return made.as_shard(i, shards) if shards > 1 else made

    servers = [BusServer(store(i), secret=secret).start() for i in range(shards)]
    address = ",".join(s.address for s in servers)
    admin = MemoryClient(address, ADMIN_AGENT, token_for(secret, ADMIN_AGENT), timeout=5.0)
    agents = {}
    for agent, (groups, role) in AGENTS.items():
        token = admin.register(agent, groups, role=role)["token"]
        agents[agent] = admin.as_agent(agent, token)
    return Side(servers, admin, agents)


@dataclass
class Op:
    """One op, as a call on one bus: ``call(client, tr)`` with ``tr`` mapping the single
    bus's ids to this bus's; ``shape`` says where the reply holds ids."""

    text: str
    agent: str
    call: Callable[[MemoryClient, Tr], Any]
    shape: str = "value"  # value, id (a new one), ids, edges, stats, writes
    batch: list[Any] = field(default_factory=list)  # write_many's (tier, now), entries
    where: tuple[str, str] = ("", "")  # the tier and namespace of an op on one


def outcome(op: Op, side: Side, tr: Tr) -> tuple[str, Any]:
    client = side.admin if op.agent == ADMIN_AGENT else side.agents[op.agent]
    try:
        return "ok", op.call(client, tr)
    except HivememError as exc:
        return "error", exc
    except Exception as exc:  # anything else is a bug on its own: shown, not raised
        return "crash", f"{type(exc).__name__}: {exc}"


def same_error(one: HivememError, sharded: HivememError) -> bool:
    """The same code and field, and row where one bus names it (of a split batch the
    sharded client names the refused row always, ``docs/protocol.md``)."""
    row = one.details.get("row")
    return (one.code, one.details.get("field")) == (
        sharded.code,
        sharded.details.get("field"),
    ) and row in (None, sharded.details.get("row"))


def several_refused(one: HivememError, sharded: HivememError) -> bool:
    """The documented difference of a batch with bad rows on several shards: each shard
    refuses its part for its own first bad row, and the error is the first refused row's,
    where one bus names the first it finds (every row's access before any value)."""
    refused = [p for p in sharded.details.get("parts", []) if p["outcome"] == "refused"]
    return len(refused) > 1 and one.code in {p["code"] for p in refused}


def refused_first(sharded: HivememError) -> bool:
    """The documented difference of a columnar batch with a column of the wrong length
    that a server checks only after access (meta, importance, valid_*): the sharded
    client cannot split it by row, so it refuses it before sending, before any access
    or value check that one bus makes first."""
    field = sharded.details.get("field")
    return field in {f"items[].{name}" for name in CHECKED_AFTER_ACCESS} and (
        "values for" in sharded.message
    )


def plain(value: Any, tr: Tr) -> Any:
    """``value`` as comparable data, its item ids (``tr``) and vectors (bytes) spelled out."""
    if isinstance(value, WriteResult):
        return ("write", value.op.value, tr(value.item_id), [tr(e) for e in value.evicted])
    if isinstance(value, Item):
        return (tr(value.id), value.tier.value, value.namespace, value.text,
                value.vector.tobytes(), value.meta, value.importance, value.created,
                value.accessed, value.hits, value.version, value.valid_from,
                value.valid_to, value.level)  # fmt: skip
    if isinstance(value, Hit):
        return ("hit", tr(value.id), value.score, plain(value.item, tr))
    if isinstance(value, ScanPage):
        return ("page", plain(value.items, tr), None if value.next is None else tr(value.next))
    if isinstance(value, list):
        return [plain(v, tr) for v in value]
    return value


def shaped(value: Any, shape: str, tr: Tr) -> Any:
    if shape == "id":
        return tr(value)
    if shape == "ids":
        return [tr(i) for i in value]
    if shape == "edges":
        return [{**e, "id": tr(e["id"]), "src": tr(e["src"]), "dst": tr(e["dst"])} for e in value]
    if shape == "stats":  # index builds run on threads: when one is under way is timing
        return {t: {k: v for k, v in s.items() if k != "index_builds"} for t, s in value.items()}
    return plain(value, tr)


def first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where ``a`` and ``b`` first differ, and how (ids as the sharded bus has them)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        for k in a:
            if a[k] != b[k]:
                return first_difference(a[k], b[k], f"{path}[{k!r}]")
    return f"{path}:\n one bus: {a!r:.600}\n sharded: {b!r:.600}"


class Differential:
    """Runs ops on both buses, compares the replies and keeps the id map."""

    def __init__(self, one: Side, many: Side, seed: int) -> None:
        self.one, self.many, self.seed = one, many, seed
        self.ids: dict[int, int] = {-1: -1}
        self.back: dict[int, int] = {-1: -1}
        self.log: list[str] = []
        self.made: dict[tuple[str, str], list[int]] = {}  # (tier, namespace): ids, single bus
        self.edges: dict[str, list[int]] = {}

    def to_many(self, i: int) -> Any:
        if isinstance(i, int) and i >= UNKNOWN:
            return i
        return self.ids.get(i, ("unbound", i))

    def fail(self, why: str) -> None:
        ops = "\n  ".join(self.log[-120:])
        pytest.fail(f"seed {self.seed}, op {len(self.log) - 1}: {why}\nlast ops:\n  {ops}")

    def bind(self, a: int, b: int) -> None:
        if self.ids.get(a, b) != b or self.back.get(b, a) != a:
            self.fail(f"id {a} of one bus is {self.ids.get(a)} on shards, got {b}")
        self.ids[a], self.back[b] = b, a

    def run(self, op: Op) -> Any:
        """The op on both buses; its single-bus reply (None if an error)."""
        self.log.append(f"{op.agent}: {op.text}")
        (ka, a), (kb, b) = outcome(op, self.one, lambda i: i), outcome(op, self.many, self.to_many)
        if (ka, kb) == ("ok", "ok"):
            self.made_ids(op, a, b)
            mine, theirs = shaped(a, op.shape, self.to_many), shaped(b, op.shape, lambda i: i)
            if mine != theirs:
                self.fail(f"replies differ at {first_difference(mine, theirs)}")
            return a
        if ka == kb == "error" and (same_error(a, b) or several_refused(a, b) or refused_first(b)):
            if op.batch and b.details.get("applied"):
                self.catch_up(op, b.details["applied"])
            if op.batch and b.details.get("answered"):
                self.recall_too(op, b.details["answered"])
            return None
        self.fail(f"outcomes differ:\n one bus: {ka} {a!r}\n sharded: {kb} {b!r}")
        return None

    def made_ids(self, op: Op, a: Any, b: Any) -> None:
        if op.shape == "id":
            self.bind(a, b)
        elif op.shape == "edges" and len(a) == len(b):  # a promote's edges: seen here first
            for x, y in zip(a, b, strict=True):
                if x["id"] not in self.ids and y["id"] not in self.back:
                    self.bind(x["id"], y["id"])
        elif op.shape == "writes":
            for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b], strict=True):  # fmt: skip
                if x.op is WriteOp.ADD and y.op is WriteOp.ADD:
                    self.bind(x.item_id, y.item_id)

    def catch_up(self, op: Op, applied: list[dict[str, Any]]) -> None:
        """The documented difference: a write_many over shards that failed may have been
        applied on some. The single bus writes the same rows, and their results must be
        those the shards gave."""
        tier, now = op.batch[0]
        rows = [op.batch[1][r["row"]] for r in applied]
        results = self.one.agents[op.agent].write_many(tier, rows, now=now)
        self.log.append(f"   (one bus catches up: rows {[r['row'] for r in applied]})")
        for result, given in zip(results, applied, strict=True):
            if result.op is WriteOp.ADD:
                self.bind(result.item_id, given["item_id"])
            mine = (result.op.value, self.to_many(result.item_id), [self.to_many(e) for e in result.evicted])  # fmt: skip
            if mine != (given["op"], given["item_id"], given["evicted"]):
                self.fail(f"caught up differently: {mine} against {given}")

    def recall_too(self, op: Op, answered: list[int]) -> None:
        """The documented difference of a search_many over shards that failed: the
        shards that answered their queries counted their hits as recalled. The single
        bus asks the same queries at the same ``now``."""
        tier, now = op.batch[0]
        self.one.agents[op.agent].search_many(tier, [op.batch[1][r] for r in answered], now=now)
        self.log.append(f"   (one bus recalls too: queries {answered})")


# --- the ops -------------------------------------------------------------------------


class Ops:
    """A seeded generator of ops over the agents' (and others') namespaces."""

    def __init__(self, rng: np.random.Generator, diff: Differential) -> None:
        self.rng, self.diff, self.now = rng, diff, 0.0

    def pick(self, seq: list[Any]) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def namespace(self, agent: str, tier: str) -> str:
        if self.chance(0.12):  # often not the caller's
            return self.pick([*AGENTS, *GROUPS]) if tier == "private" else self.pick(GROUPS)
        if tier == "private":
            return agent
        return self.pick(AGENTS[agent][0] or GROUPS)

    def text(self) -> str:
        return " ".join(self.pick(WORDS) for _ in range(int(self.rng.integers(1, 3))))

    def item(self, tier: str, bad: bool = False) -> NewItem:
        level = int(self.rng.integers(0, 3)) if tier == "graph" else 0
        meta = {"n": int(self.rng.integers(3))} if self.chance(0.3) else {}
        item = NewItem(self.text(), meta=meta, importance=float(self.rng.integers(3)), level=level)
        if bad:
            return self.pick([
                NewItem("x" * 40_000),
                NewItem("late", valid_from=5.0, valid_to=1.0),
                NewItem("nan", importance=math.nan),
                NewItem("short", vector=np.ones(DIM - 1, np.float32)),
                NewItem("deep", meta={"a": {"b": {"c": {"d": {"e": 1}}}}}),
            ])  # fmt: skip
        return item

    def item_id(self, tier: str, namespace: str) -> int:
        made = self.diff.made.get((tier, namespace), [])
        everywhere = [i for ids in self.diff.made.values() for i in ids]
        if made and self.chance(0.85):
            return self.pick(made)
        if everywhere and self.chance(0.5):
            return self.pick(everywhere)  # an item of another namespace
        return UNKNOWN + int(self.rng.integers(100))

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def next(self) -> Op:
        agent = self.pick(list(AGENTS))
        kind = self.pick(
            ["write"] * 4 + ["write_many"] * 4 + ["get", "search", "search_many", "scan",
             "update", "delete", "history", "stats", "graph", "graph", "bad_columns"] * 2
        )  # fmt: skip
        return getattr(self, kind)(agent)

    def write(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns, item, now = self.namespace(agent, tier), self.item(tier, self.chance(0.1)), self.tick()
        return Op(
            f"write {tier}/{ns} {item.text[:20]!r} level {item.level} at {now}",
            agent,
            lambda c, tr: c.write(tier, ns, item, now=now),
            "writes",
            where=(tier, ns),
        )

    def write_many(self, agent: str) -> Op:
        tier, now = self.pick(["private", "shared", "graph"]), self.tick()
        n = int(self.rng.integers(0, 7)) if self.chance(0.9) else 0
        entries: list[tuple[Any, ...]] = []
        vectors = self.chance(0.2)
        for _ in range(n):
            item = self.item(tier, self.chance(0.06))
            if vectors:
                text = item.text
                item = NewItem(text, vector=_embed(text), meta=item.meta, level=item.level)
            if self.chance(0.15):  # on behalf of another agent (its own token)
                other = self.pick(list(AGENTS))
                token = self.diff.one.agents[other].token
                entries.append((self.namespace(other, tier), item, OnBehalf(other, token)))
            else:
                entries.append((self.namespace(agent, tier), item))
        bad_tier = self.chance(0.04)
        called = "bogus" if bad_tier else tier
        spread = sorted({e[0] for e in entries})
        return Op(
            f"write_many {called} {[(e[0], e[1].text[:12]) for e in entries]} at {now}"
            f" ({len(spread)} namespaces)",
            agent,
            lambda c, tr: c.write_many(called, entries, now=now),
            "writes",
            [(called, now), entries],
        )

    def bad_columns(self, agent: str) -> Op:
        """A columnar write_many whose columns are wrong, in wire form."""
        ns = [self.namespace(agent, "shared") for _ in range(3)]
        case = self.pick(["short meta", "text not a list", "odd vector", "short namespace",
                          "empty, bad tier", "empty, bad now"])  # fmt: skip
        columns: dict[str, Any] = {"namespace": ns, "text": ["a", "b", "c"]}
        tier, now = "shared", self.tick()
        if case == "short meta":
            columns["meta"] = [{}]
        elif case == "text not a list":
            columns["text"] = "abc"
        elif case == "odd vector":
            columns["vector"] = b"\0" * (4 * DIM * 3 + 4)
        elif case == "short namespace":
            columns["namespace"] = ns[:2]
        elif case == "empty, bad tier":
            columns, tier = {"namespace": [], "text": []}, "bogus"
        else:
            columns, now = {"namespace": [], "text": []}, math.nan
        return Op(
            f"write_many_encoded {tier} ({case}) {columns!r:.80} at {now}",
            agent,
            lambda c, tr: c.write_many_encoded(tier, columns, now=now),
            "writes",
        )

    def get(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns = self.namespace(agent, tier)
        i, now = self.item_id(tier, ns), self.pick([None, self.tick()])
        return Op(f"get {tier}/{ns} {i} now={now}", agent, lambda c, tr: c.get(tier, ns, tr(i), now=now))  # fmt: skip

    def query(self) -> Any:
        return self.text() if self.chance(0.7) else _embed(self.text())

    def search(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns, q, k = self.namespace(agent, tier), self.query(), int(self.rng.integers(0, 5))
        now, as_of = self.pick([None, self.tick()]), self.pick([None, None, self.now / 2])
        return Op(
            f"search {tier}/{ns} {q if isinstance(q, str) else 'vector'} k={k} now={now} as_of={as_of}",
            agent,
            lambda c, tr: c.search(tier, ns, q, k, now=now, as_of=as_of),
        )  # fmt: skip

    def search_many(self, agent: str) -> Op:
        tier, now = self.pick(["private", "shared", "graph"]), self.pick([None, self.tick()])
        n = int(self.rng.integers(0, 6)) if self.chance(0.9) else 0
        queries = []
        for _ in range(n):
            k = int(self.rng.integers(1, 4)) if self.chance(0.93) else 0
            queries.append((self.namespace(agent, tier), self.query(), k))
        bad_tier = self.chance(0.04)
        called = "bogus" if bad_tier else tier
        return Op(
            f"search_many {called} {[(q[0], q[2]) for q in queries]} now={now}",
            agent,
            lambda c, tr: c.search_many(called, queries, now=now),
            batch=[(called, now), queries],
        )

    def scan(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns, limit = self.namespace(agent, tier), int(self.rng.integers(1, 4))

        def pages(c: MemoryClient, tr: Tr) -> list[ScanPage]:
            got = [c.scan(tier, ns, limit=limit)]
            while got[-1].next is not None and len(got) < 10:
                got.append(c.scan(tier, ns, after=got[-1].next, limit=limit))
            return got

        return Op(f"scan {tier}/{ns} limit={limit}, every page", agent, pages)

    def update(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns, version, now = self.namespace(agent, tier), int(self.rng.integers(1, 3)), self.tick()
        i = self.item_id(tier, ns)
        changes = self.pick([{"text": self.text()}, {"meta": {"u": 1}}, {"importance": 2.5},
                             {"txt": "no such field"}, {"importance": math.inf}])  # fmt: skip
        return Op(
            f"update {tier}/{ns} {i} v{version} {changes} at {now}",
            agent,
            lambda c, tr: c.update(tier, ns, tr(i), expected_version=version, now=now, **changes),
        )

    def delete(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns, now = self.namespace(agent, tier), self.tick()
        i = self.item_id(tier, ns)
        return Op(f"delete {tier}/{ns} {i} at {now}", agent, lambda c, tr: c.delete(tier, ns, tr(i), now=now))  # fmt: skip

    def history(self, agent: str) -> Op:
        tier = self.pick(["private", "shared", "graph"])
        ns = self.namespace(agent, tier)
        i = self.item_id(tier, ns)
        return Op(f"history {tier}/{ns} {i}", agent, lambda c, tr: c.history(tier, ns, tr(i)))

    def stats(self, agent: str) -> Op:
        who = self.pick([agent, ADMIN_AGENT])
        return Op("stats", who, lambda c, tr: c.stats(), "stats")

    def graph(self, agent: str) -> Op:
        ns = self.namespace(agent, "graph")
        kind = self.pick(["add_edge", "edges", "neighbors", "promote", "retrieve", "invalidate"])
        now = self.tick()
        a, b = self.item_id("graph", ns), self.item_id("graph", ns)
        if kind == "add_edge":
            kind_of = self.pick(["next_to", "causes", ""])
            return Op(f"add_edge {ns} {a}->{b} {kind_of!r} at {now}", agent,
                      lambda c, tr: c.add_edge(ns, tr(a), tr(b), kind_of, now=now), "id",
                      where=("graph", ns))  # fmt: skip
        if kind == "edges":
            edges = self.diff.edges.get(ns, [])
            after = self.pick(edges) if edges and self.chance(0.4) else 0
            kw = self.pick([{}, {"node": a}, {"as_of": now / 2}, {"limit": 2}, {"type": "causes"}])
            return Op(
                f"edges {ns} after={after} {kw}",
                agent,
                lambda c, tr: c.edges(ns, after=tr(after) if after else 0,
                                      **{k: tr(v) if k == "node" else v for k, v in kw.items()}),
                "edges",
            )  # fmt: skip
        if kind == "neighbors":
            direction = self.pick(["both", "in", "out", "sideways"])
            return Op(f"neighbors {ns} {a} {direction}", agent,
                      lambda c, tr: c.neighbors(ns, tr(a), direction=direction), "ids")  # fmt: skip
        if kind == "promote":
            children = sorted({a, b})
            parent = NewItem(f"about {self.text()}", level=int(self.rng.integers(0, 3)))
            return Op(f"promote {ns} {children} level {parent.level} at {now}", agent,
                      lambda c, tr: c.promote(ns, [tr(i) for i in children], parent, now=now), "id",
                      where=("graph", ns))  # fmt: skip
        if kind == "invalidate":
            edge = self.pick(self.diff.edges.get(ns, [UNKNOWN]))
            return Op(f"invalidate_edge {ns} {edge} at {now}", agent,
                      lambda c, tr: c.invalidate_edge(ns, tr(edge), at=now))  # fmt: skip
        q, method = self.query(), self.pick(["ppr", "khop"])
        look = self.pick([None, now])
        return Op(f"retrieve {ns} {q if isinstance(q, str) else 'vector'} {method} now={look}",
                  agent, lambda c, tr: c.retrieve(ns, q, 3, now=look, method=method))  # fmt: skip


def _embed(text: str) -> np.ndarray:
    from hivemem.memory_bus.embedder import HashingEmbedder

    return HashingEmbedder(DIM)([text])[0]


def record(diff: Differential, op: Op, reply: Any) -> None:
    """What the generator may name next: the ids the single bus made, and where."""
    if reply is None:
        return
    tier, ns = op.where
    if isinstance(reply, WriteResult) and reply.op is WriteOp.ADD:
        diff.made.setdefault((tier, ns), []).append(reply.item_id)
    elif op.batch and op.shape == "writes" and isinstance(reply, list):
        for result, entry in zip(reply, op.batch[1], strict=True):
            if result.op is WriteOp.ADD:
                diff.made.setdefault((op.batch[0][0], entry[0]), []).append(result.item_id)
    elif op.text.startswith("promote"):
        diff.made.setdefault((tier, ns), []).append(reply)
    elif op.text.startswith("add_edge"):
        diff.edges.setdefault(ns, []).append(reply)


@pytest.fixture
def buses(request: pytest.FixtureRequest) -> Iterator[tuple[Side, Side]]:
    secret = new_secret()
    one = start_side(secret, 1)
    many = start_side(secret, request.param)
    try:
        yield one, many
    finally:
        one.close()
        many.close()


def test_the_agents_namespaces_lie_on_every_shard() -> None:
    for shards in (2, 3):
        names = [*AGENTS, *GROUPS]
        assert {shard_of(n, shards) for n in names} == set(range(shards))
        assert len({shard_of(g, shards) for g in AGENTS["alice"][0]}) == 2


SEEDS = [(seed, 2 + seed % 2) for seed in [*range(8), 103, 106]]


@pytest.mark.parametrize(
    ("seed", "buses"), SEEDS, indirect=["buses"], ids=[f"seed{s}-{n}shards" for s, n in SEEDS]
)
def test_a_sharded_bus_answers_as_one_bus(seed: int, buses: tuple[Side, Side]) -> None:
    one, many = buses
    diff = Differential(one, many, seed)
    ops = Ops(np.random.default_rng(seed), diff)
    for _ in range(400):
        op = ops.next()
        record(diff, op, diff.run(op))
    for agent, (groups, _) in AGENTS.items():  # at the end, everything each agent sees
        for tier, names in (("private", [agent]), ("shared", groups), ("graph", groups)):
            for ns in names:
                diff.run(Op(f"final scan {tier}/{ns}", agent,
                            lambda c, tr, t=tier, n=ns: c.scan(t, n, limit=100)))  # fmt: skip
    diff.run(Op("final stats", ADMIN_AGENT, lambda c, tr: c.stats(), "stats"))
    assert sum(len(ids) for ids in diff.made.values()) > 30, "the ops should write"
