"""One agent's bad request among its host's others: the error names that agent and its
own field, not a row of the host's batch; and a built-in agent's bad params are refused
as it is built. Real BusServer(s) on 127.0.0.1, the host in-process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from hivemem.agents.base import AGENT_TYPES, Action, AgentSpec, BaseAgent, Proposal, Recall
from hivemem.agents.host import AgentHost, _HostActor
from hivemem.memory_bus.auth import new_secret, token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.config import StoreConfig, TierConfig
from hivemem.memory_bus.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidInputError,
    TooLargeError,
)
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.memory_bus.server import BusServer
from hivemem.memory_bus.store import MemoryStore
from hivemem.scenarios.families import BUILTIN_MODULES

DIM = 32
BAD = "agent-3"


@AGENT_TYPES.register("test_bad_agent_writer")
class _Writer(BaseAgent):
    """Recalls and writes one note a tick; its ``bad`` param spoils one of them."""

    hit_vectors = False

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        if spec.params.get("bad") == "build_raises":
            raise KeyError("colour")

    def plan(self, t: float, obs: Any) -> list[Recall]:
        bad = self.spec.params.get("bad")
        if bad == "plan_raises":
            raise KeyError("question")
        if bad == "plan_dicts":
            return [{"tier": "private", "namespace": self.agent_id, "query": "x"}]  # type: ignore[list-item]
        k = 0 if bad == "k" else 3
        other = "agent-0" if bad == "read" else self.agent_id  # not its own: refused
        return [
            Recall("private", self.agent_id, "notes", 2),
            Recall("private", other, "what", k),
        ]

    def act(self, t: float, obs: Any, recalled: list[Any]) -> Action:
        bad = self.spec.params.get("bad")
        good = Proposal("private", self.agent_id, f"{self.agent_id} at {t}")
        if bad == "act_none":
            return None  # type: ignore[return-value]
        if bad == "act_dict_write":
            return Action(writes=[good, {"tier": "private", "text": "x"}])  # type: ignore[list-item]
        if bad == "text":
            return Action(writes=[good, Proposal("private", self.agent_id, "x" * 40_000)])
        if bad == "meta":  # a set: msgpack cannot carry it, the client refuses the batch
            return Action(
                writes=[good, Proposal("private", self.agent_id, "m", meta={"seen": {t}})]
            )
        if bad == "valid":
            return Action(
                writes=[good, Proposal("private", self.agent_id, "v", valid_from=5.0, valid_to=1.0)]
            )
        return Action(writes=[good])


@contextmanager
def host_of_six(shards: int, bad: str) -> Iterator[tuple[AgentHost, list[BusServer]]]:
    """Six agents on one host, ``agent-3`` spoiling its requests as ``bad`` says."""
    secret = new_secret()
    cfg = StoreConfig(dim=DIM, private=TierConfig(capacity=100))
    with ExitStack() as stack:
        servers = [
            stack.enter_context(BusServer(MemoryStore(cfg).as_shard(i, shards), secret=secret))
            for i in range(shards)
        ]
        address = ",".join(s.address for s in servers)
        specs = [
            AgentSpec(f"agent-{i}", "test_bad_agent_writer", params={"bad": bad} if i == 3 else {})
            for i in range(6)
        ]
        admin = stack.enter_context(
            MemoryClient(address, ADMIN_AGENT, token_for(secret, ADMIN_AGENT), timeout=5.0)
        )
        tokens = {s.agent_id: admin.register(s.agent_id, [])["token"] for s in specs}
        host = AgentHost(address, specs, tokens, DIM, timeout=5.0, client_id=5)
        stack.callback(host.close)
        yield host, servers


def stored(servers: list[BusServer]) -> dict[str, int]:
    def count(st: Any) -> dict[str, int]:
        return {ns: len(n.items) for ns, n in st.private.namespaces.items()}

    out: dict[str, int] = {}
    for server in servers:
        for ns, n in server.inspect(count).items():
            out[ns] = out.get(ns, 0) + n
    return out


@pytest.mark.parametrize(
    ("bad", "error", "field"),
    [
        ("text", TooLargeError, "writes[1].text"),
        ("valid", InvalidInputError, "writes[1].valid_to"),
        ("meta", InvalidInputError, "writes[1].meta.seen"),  # was "columns", no agent
    ],
)
def test_a_bad_write_names_its_agent_and_nothing_of_the_batch_is_applied(
    bad: str, error: type[Exception], field: str
) -> None:
    """On one shard a ``write_many`` is atomic: no agent's write of it is applied."""
    with host_of_six(1, bad) as (host, servers):
        host.step(0, {f"agent-{i}": {} for i in range(6)})
        with pytest.raises(error) as caught:
            host.commit(0)
        exc = caught.value
        assert type(exc) is error
        assert str(exc).startswith(f"agent {BAD!r}: invalid {field}")
        assert exc.details["agent"] == BAD and exc.details["field"] == field
        assert stored(servers) == {}


def test_a_bad_write_on_a_sharded_bus_says_which_agents_writes_were_applied() -> None:
    """Split over shards a ``write_many`` is not atomic: the other agents' rows on other
    shards are applied, and the error says whose, by agent."""
    with host_of_six(2, "text") as (host, servers):
        host.step(0, {f"agent-{i}": {} for i in range(6)})
        with pytest.raises(TooLargeError) as caught:
            host.commit(0)
        exc = caught.value
        assert exc.details["agent"] == BAD and exc.details["field"] == "writes[1].text"
        applied = exc.details["agents"]["applied"]
        assert BAD in exc.details["agents"]["refused"]
        assert {a: n for a, n in stored(servers).items()} == {a: 1 for a in applied}


@pytest.mark.parametrize("shards", [1, 2])
def test_a_bad_recall_names_its_agent_and_its_own_recall(shards: int) -> None:
    with host_of_six(shards, "k") as (host, _):
        with pytest.raises(InvalidInputError) as caught:
            host.step(0, {f"agent-{i}": {} for i in range(6)})
        exc = caught.value
        assert str(exc).startswith(f"agent {BAD!r}: invalid recalls[1].k: expected an int")
        assert exc.details["agent"] == BAD and exc.details["field"] == "recalls[1].k"


def test_a_refused_recall_names_its_agent_once_and_its_own_recall() -> None:
    """The bus's refusal names the agent already and its batch row in parentheses; the
    host made it "agent 'agent-3': agent 'agent-3' may not read ... (queries[3])
    (recalls[1])"."""
    with host_of_six(1, "read") as (host, _):
        with pytest.raises(AccessDeniedError) as caught:
            host.step(0, {f"agent-{i}": {} for i in range(6)})
        message = str(caught.value)
        assert message.startswith(f"agent {BAD!r} may not read private/agent-0")
        assert message.count(BAD) == 1 and "queries[" not in message
        assert message.endswith("(recalls[1])")
        assert caught.value.details["agent"] == BAD


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"k": 0}, "k: expected an int in 1..1000, got 0"),
        ({"k": True}, "k: expected an int in 1..1000, got True"),
        ({"k": "8"}, "k: expected an int in 1..1000, got '8'"),
        ({"read_tiers": ["shard"]}, "read_tiers must be a list of"),
        ({"write_tier": "public"}, "write_tier must be one of"),
        ({"use_as_of": "yes"}, "use_as_of must be true or false"),
    ],
)
def test_a_fact_memory_agent_refuses_bad_params_as_it_is_built(
    params: dict[str, Any], says: str
) -> None:
    """Refused before the run's first request, naming the agent (the bus refused k=0 at
    the first tick, as a row of the host's batch)."""
    server = BusServer(MemoryStore(StoreConfig(dim=DIM)))
    spec = AgentSpec("analyst-1", "fact_memory", groups=("team",), params=params)
    with server, pytest.raises(ConfigError, match="agent 'analyst-1': "):
        AgentHost(
            server.address, [spec], {"analyst-1": server.token("analyst-1")}, DIM, BUILTIN_MODULES
        )
    with pytest.raises(ConfigError) as caught:
        AGENT_TYPES.create("fact_memory", spec=spec)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("plan_raises", "plan raised KeyError: 'question'"),
        ("plan_dicts", "plan answered [{'tier': 'private'"),
        ("act_none", "act answered None; it must return an Action"),
        ("act_dict_write", "act answered Action(answer=None, writes=[Proposal("),
    ],
)
def test_an_agent_that_raises_or_answers_out_of_the_protocol_is_named_with_its_type(
    bad: str, says: str
) -> None:
    """Each failed the step with an AttributeError raised in the host's code (or the
    agent's own KeyError), naming neither the agent nor its type."""
    with host_of_six(1, bad) as (host, servers):
        with pytest.raises(ConfigError) as caught:
            host.step(0, {f"agent-{i}": {} for i in range(6)})
        message = str(caught.value)
        assert message.startswith(f"agent {BAD!r} (type 'test_bad_agent_writer'): {says}")
        assert caught.value.details["agent"] == BAD
        assert stored(servers) == {}


def test_an_agent_whose_constructor_raises_is_named_with_its_type() -> None:
    """A ``KeyError`` in an agent type's own ``__init__`` ended a run with Ray's
    ``ActorDiedError`` and the run command's whole traceback, naming no agent. It is a
    ConfigError naming the agent now, which the Ray actor keeps for its first call (the
    run's one ``stopped (error: ...)`` line)."""
    with pytest.raises(ConfigError) as caught, host_of_six(1, "build_raises"):
        pass
    assert str(caught.value) == (
        f"agent {BAD!r} (type 'test_bad_agent_writer'): building it raised KeyError: 'colour'"
    )
    assert caught.value.details["agent"] == BAD
    assert isinstance(caught.value.__cause__, KeyError)  # the author's traceback, kept
    spec = AgentSpec(BAD, "test_bad_agent_writer", params={"bad": "build_raises"})
    actor = _HostActor("tcp://127.0.0.1:1", [spec], {BAD: "t"}, DIM)  # no bus reached
    with pytest.raises(ConfigError, match="building it raised KeyError"):
        actor.info()
