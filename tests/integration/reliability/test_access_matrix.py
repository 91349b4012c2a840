"""Access control over real sockets, case by case: every op on every tier by an agent who
may and one who may not, wrong and missing tokens, batch entries on behalf of others, the
admin op, graph levels by role, and CURVE keys.

Each allowed case must succeed and each refused one must fail with its exact code, so the
matrix fails both if access were wide open and if it were shut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq.auth
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import BusTimeoutError, MemoryClient, OnBehalf
from hivemem.memory_bus.config import AccessConfig, StoreConfig
from hivemem.memory_bus.curve import CurveConfig
from hivemem.memory_bus.errors import HivememError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore

DIM = 16
GROUPS = {"alice": ["team"], "bob": ["team"], "carol": ["rivals"], "wendy": ["team"]}
ROLES = {"wendy": "worker"}  # a worker may touch graph level 0 only
ACCESS = AccessConfig(graph_levels={"worker": [0]})
VEC = np.ones(DIM, dtype=np.float32)


def new_server(**kw: Any) -> tuple[BusServer, dict[str, str]]:
    server = BusServer(MemoryStore(StoreConfig(dim=DIM, access=ACCESS)), **kw)
    tokens = {a: server.register(a, g, ROLES.get(a, "agent")) for a, g in GROUPS.items()}
    tokens["ghost"] = server.token("ghost")  # a valid token, never registered
    tokens["__admin__"] = server.admin_token
    return server, tokens


class Matrix:
    """A running server and a client per agent (one connection, a handle per agent)."""

    def __init__(self, server: BusServer, tokens: dict[str, str]) -> None:
        self.server, self.tokens = server, tokens
        self.conn = MemoryClient(server.address, timeout=5.0)
        self.now = 0.0

    def as_(self, agent: str, token: str | None = None) -> MemoryClient:
        return self.conn.as_agent(agent, self.tokens[agent] if token is None else token)

    def fresh(self, tier: str, namespace: str, level: int = 0) -> int:
        """An item written by a member of ``namespace`` (its owner on the private tier)."""
        owner = namespace if tier == "private" else _member(namespace)
        self.now += 1
        item = NewItem(f"fact {self.now}", vector=VEC, level=level)
        return int(self.as_(owner).write(tier, namespace, item, now=self.now).item_id)


def _member(group: str) -> str:
    return next(a for a, groups in GROUPS.items() if group in groups and a not in ROLES)


@pytest.fixture
def matrix() -> Iterator[Matrix]:
    server, tokens = new_server()
    with server:
        m = Matrix(server, tokens)
        yield m
        m.conn.close()


Op = Callable[[Matrix, MemoryClient, str, str], Any]


def _item(m: Matrix, level: int = 0) -> NewItem:
    m.now += 1
    return NewItem(f"proposal {m.now}", vector=VEC, level=level)


ITEM_OPS: dict[str, Op] = {
    "write": lambda m, c, tier, ns: c.write(tier, ns, _item(m), now=m.now),
    "write_many": lambda m, c, tier, ns: c.write_many(tier, [(ns, _item(m))], now=m.now),
    "get": lambda m, c, tier, ns: c.get(tier, ns, m.fresh(tier, ns)),
    "search": lambda m, c, tier, ns: c.search(tier, ns, VEC, 3, now=m.now),
    "search_many": lambda m, c, tier, ns: c.search_many(tier, [(ns, VEC, 3)], now=m.now),
    "update": lambda m, c, tier, ns: c.update(
        tier, ns, m.fresh(tier, ns), expected_version=1, now=m.now, importance=0.9
    ),
    "delete": lambda m, c, tier, ns: c.delete(tier, ns, m.fresh(tier, ns), now=m.now),
    "history": lambda m, c, tier, ns: c.history(tier, ns, m.fresh(tier, ns)),
    "subscribe": lambda m, c, tier, ns: c.subscribe([f"{tier}/{ns}"]),
}


def _edge(m: Matrix, c: MemoryClient, ns: str) -> Any:
    return c.add_edge(ns, m.fresh("graph", ns), m.fresh("graph", ns), "knows", now=m.now)


GRAPH_OPS: dict[str, Op] = {
    "add_edge": lambda m, c, tier, ns: _edge(m, c, ns),
    "edges": lambda m, c, tier, ns: c.edges(ns),
    "neighbors": lambda m, c, tier, ns: c.neighbors(ns, m.fresh("graph", ns)),
    "retrieve": lambda m, c, tier, ns: c.retrieve(ns, VEC, 3, now=m.now),
    "promote": lambda m, c, tier, ns: c.promote(
        ns, [m.fresh("graph", ns)], _item(m, level=1), now=m.now
    ),
}

CASES = [
    # (agent, tier, namespace, allowed)
    ("alice", "private", "alice", True),
    ("alice", "private", "bob", False),
    ("bob", "private", "alice", False),
    ("ghost", "private", "ghost", True),
    ("ghost", "private", "alice", False),
    ("alice", "shared", "team", True),
    ("bob", "shared", "team", True),
    ("carol", "shared", "team", False),
    ("alice", "shared", "rivals", False),
    ("ghost", "shared", "team", False),
    ("alice", "graph", "team", True),
    ("carol", "graph", "team", False),
    ("bob", "graph", "rivals", False),
    ("ghost", "graph", "team", False),
]


def _outcome(op: Op, m: Matrix, client: MemoryClient, tier: str, ns: str) -> str:
    try:
        op(m, client, tier, ns)
    except HivememError as exc:
        return str(exc.code)
    return "ok"


@pytest.mark.parametrize(("agent", "tier", "namespace", "allowed"), CASES)
def test_every_op_is_allowed_or_refused_as_the_rules_say(
    matrix: Matrix, agent: str, tier: str, namespace: str, allowed: bool
) -> None:
    ops = {**ITEM_OPS, **(GRAPH_OPS if tier == "graph" else {})}
    client = matrix.as_(agent)
    got = {name: _outcome(op, matrix, client, tier, namespace) for name, op in ops.items()}
    want = {name: "ok" if allowed else "access_denied" for name in ops}
    assert got == want


def test_graph_levels_follow_the_role(matrix: Matrix) -> None:
    """wendy (role worker: level 0 only) is in the team but may not touch level 1 or 2."""
    wendy = matrix.as_("wendy")
    low, high = matrix.fresh("graph", "team", 0), matrix.fresh("graph", "team", 2)
    matrix.now += 1
    assert wendy.write("graph", "team", _item(matrix, level=0), now=matrix.now).item_id > 0
    assert wendy.get("graph", "team", low).id == low
    refused = {
        "write level 2": lambda: wendy.write("graph", "team", _item(matrix, 2), now=matrix.now),
        "promote to level 1": lambda: wendy.promote(
            "team", [low], _item(matrix, 1), now=matrix.now
        ),
    }
    for what, call in refused.items():
        with pytest.raises(HivememError) as caught:
            call()
        assert caught.value.code == "access_denied", what
    hidden = {  # a node on a level hidden from her is no node to her, as an absent id
        "get level 2": lambda: wendy.get("graph", "team", high),
        "edge to level 2": lambda: wendy.add_edge("team", low, high, "x", now=matrix.now),
        "neighbors of level 2": lambda: wendy.neighbors("team", high),
    }
    for what, call in hidden.items():
        with pytest.raises(HivememError) as caught:
            call()
        assert caught.value.code == "item_not_found", what
    # what she reads never shows a level she may not touch
    hits = wendy.search("graph", "team", VEC, 10, now=matrix.now)
    assert hits and {h.item.level for h in hits} == {0}
    found = wendy.retrieve("team", VEC, 10, now=matrix.now, method="khop")
    assert found and {h.item.level for h in found} == {0}


BAD_TOKENS: dict[str, Callable[[dict[str, str]], tuple[str, str]]] = {
    "another agent's token": lambda t: ("alice", t["bob"]),
    "no token": lambda t: ("alice", ""),
    "a random token": lambda t: ("alice", "0" * 64),
    "a token under another secret": lambda t: ("alice", token_for(new_secret(), "alice")),
    "no agent": lambda t: ("", t["alice"]),
    "the admin's name with no token": lambda t: ("__admin__", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_wrong_and_missing_tokens_are_unauthenticated(matrix: Matrix, case: str) -> None:
    agent, token = BAD_TOKENS[case](matrix.tokens)
    client = matrix.conn.as_agent(agent, token)
    calls = {
        "ping": lambda: client.ping(),
        "write": lambda: client.write("private", "alice", _item(matrix), now=1.0),
        "search": lambda: client.search("shared", "team", VEC, 3, now=1.0),
        "register": lambda: client.register("mallory", ["team"]),
    }
    for what, call in calls.items():
        with pytest.raises(HivememError) as caught:
            call()
        assert caught.value.code == "unauthenticated", what
    assert matrix.as_("alice").search("private", "alice", VEC, 10, now=2.0) == []


def test_batch_entries_are_checked_one_by_one_and_all_or_nothing(matrix: Matrix) -> None:
    t = matrix.tokens
    alice = matrix.as_("alice")
    item = _item(matrix)
    ok = alice.write_many("shared", [("team", item, OnBehalf("bob", t["bob"]))], now=1.0)
    assert len(ok) == 1  # bob is in the team: allowed, even sent by alice
    refused = {
        "access_denied": [("team", item), ("team", item, OnBehalf("carol", t["carol"]))],
        "unauthenticated": [("team", item), ("team", item, OnBehalf("bob", t["alice"]))],
    }
    for code, entries in refused.items():
        with pytest.raises(HivememError) as caught:
            alice.write_many("shared", entries, now=1.0)
        assert caught.value.code == code
        with pytest.raises(HivememError) as caught:
            alice.search_many("shared", [(e[0], VEC, 3, None, *e[2:]) for e in entries], now=1.0)
        assert caught.value.code == code
    # only bob's allowed write is there: the refused batches applied nothing
    assert matrix.server.inspect(MemoryStore.stats)["shared"]["items"] == 1


def test_only_the_admin_registers_agents(matrix: Matrix) -> None:
    for agent in ("alice", "ghost"):
        with pytest.raises(HivememError) as caught:
            matrix.as_(agent).register("mallory", ["team"])
        assert caught.value.code == "access_denied"
    token = matrix.as_("__admin__").register("mallory", ["team"])["token"]
    mallory = matrix.conn.as_agent("mallory", token)
    assert mallory.write("shared", "team", _item(matrix), now=3.0).item_id > 0


def _keys(directory: Path, name: str) -> dict[str, bytes]:
    directory.mkdir(exist_ok=True)
    _, secret_file = zmq.auth.create_certificates(directory, name)
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None
    return {"public": public, "secret": secret}


def test_curve_refuses_unknown_client_keys_and_a_wrong_server_key(tmp_path: Path) -> None:
    server_keys = _keys(tmp_path / "server", "server")
    impostor = _keys(tmp_path / "impostor", "server")
    allowed = _keys(tmp_path / "allowed", "client")
    stranger = _keys(tmp_path / "strangers", "client")
    curve = CurveConfig(tmp_path / "server" / "server.key_secret", tmp_path / "allowed")
    server, tokens = new_server(curve=curve)
    refused = {
        "unknown client key": {**stranger, "server": server_keys["public"]},
        "wrong server key": {**allowed, "server": impostor["public"]},
    }
    with server:
        good = {**allowed, "server": server_keys["public"]}
        with MemoryClient(server.address, "alice", tokens["alice"], curve=good) as client:
            assert client.ping()["agent"] == "alice"
        for what, keys in refused.items():
            with (
                MemoryClient(
                    server.address, "alice", tokens["alice"], curve=keys, timeout=0.5, retries=0
                ) as client,
                pytest.raises(BusTimeoutError),
            ):
                client.ping()
                pytest.fail(what)
