"""The tier contract: checks every tier, mode and eviction policy must pass.

Users run it over their own plug-ins the way PettingZoo users run ``parallel_api_test``::

    from hivemem.memory_bus.testing import run_tier_contract
    run_tier_contract(lambda: MemoryStore(my_config), "shared")

Each check raises :class:`~hivemem.memory_bus.testing.failures.ContractFailure` (an
``AssertionError``, also under ``python -O``) with a message naming what broke.
"""

from __future__ import annotations

import bisect
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import numpy as np
from hivemem.memory_bus.config import NamespaceMode
from hivemem.memory_bus.errors import (
    AccessDeniedError,
    InvalidInputError,
    VersionConflictError,
)
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem, TierName, WriteOp
from hivemem.memory_bus.store import MemoryStore
from hivemem.memory_bus.testing.failures import ContractFailure, expect
from hivemem.memory_bus.tiers import VectorTier

StoreFactory = Callable[[], MemoryStore]


@dataclass
class Harness:
    """A store, one tier of it, an owner with a namespace and an outsider."""

    store: MemoryStore
    tier: VectorTier
    owner: Caller
    outsider: Caller
    namespace: str
    rng: np.random.Generator

    @classmethod
    def build(cls, factory: StoreFactory, tier: str | TierName, seed: int = 0) -> Harness:
        """Make a fresh harness from ``factory``."""
        store = factory()
        tier_obj = store.tier(tier)
        owner = Caller("agent-a", frozenset({"team-a"}))
        outsider = Caller("agent-b", frozenset({"team-b"}))
        namespace = owner.agent_id if tier_obj.name is TierName.PRIVATE else "team-a"
        return cls(store, tier_obj, owner, outsider, namespace, np.random.default_rng(seed))

    @property
    def vector_only(self) -> bool:
        """Whether the tier takes vectors without text."""
        return self.tier.config.mode is NamespaceMode.VECTOR

    def new_item(self, text: str, **fields: object) -> NewItem:
        """An item suited to the tier's mode, with an explicit random unit vector."""
        vec = self.rng.standard_normal(self.store.config.dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        return NewItem(text="" if self.vector_only else text, vector=vec, **fields)  # type: ignore[arg-type]

    def snapshot(self) -> bytes:
        """The whole store, packed: equal bytes mean an unchanged store."""
        return bytes(msgpack.packb(self.store.get_state(), use_bin_type=True))


def run_tier_contract(factory: StoreFactory, tier: str | TierName) -> None:
    """Run every tier check against fresh stores from ``factory``.

    Raises:
        ContractFailure: a check failed; or the tier's write policy does not add a first
            proposal (the checks read back what they write; a policy's own decisions
            are :func:`~hivemem.memory_bus.testing.check_write_policy`'s to check).
    """
    probe = Harness.build(factory, tier)
    first = probe.tier.write(probe.owner, probe.namespace, probe.new_item("a first note"), now=1.0)
    if first.op is not WriteOp.ADD:
        raise ContractFailure(
            "the tier contract reads back what it writes, so it needs a write policy that "
            f"adds a first proposal to an empty namespace; the {probe.tier.name.value} tier's "
            f"{probe.tier.config.write_policy!r} answered {first.op.value} (check a write "
            "policy with check_write_policy)"
        )
    for check in TIER_CHECKS:
        check(Harness.build(factory, tier))


def check_round_trip(h: Harness) -> None:
    """What is written is read back, and search ranks it first for its own vector."""
    new = h.new_item("the vault code is 4417", meta={"key": "vault", "n": [1, 2]}, importance=3.0)
    result = h.tier.write(h.owner, h.namespace, new, now=1.0)
    item = h.tier.get(h.owner, h.namespace, result.item_id)
    expect(
        (item.text, item.meta, item.importance) == (new.text, new.meta, 3.0),
        "read differs from write",
    )
    vector = new.vector  # the harness gives every new item a vector
    if vector is None or not np.allclose(item.vector, vector):
        raise ContractFailure("vector changed")
    expect((item.version, item.created, item.tier) == (1, 1.0, h.tier.name), "bad bookkeeping")
    hits = h.tier.search(h.owner, h.namespace, vector, k=1, now=2.0)
    expect(hits and hits[0].id == item.id, "an item is not its own nearest neighbour")
    expect(hits[0].score > 0.99, f"cosine of an item with itself is {hits[0].score}")
    expect(item.hits == 1 and item.accessed == 2.0, "search did not count as a recall")


def check_versions(h: Harness) -> None:
    """Optimistic updates: the current version wins, a stale one is refused and changes nothing."""
    item_id = h.tier.write(h.owner, h.namespace, h.new_item("v1"), now=0.0).item_id
    text = "" if h.vector_only else "v2"
    updated = h.tier.update(
        h.owner, h.namespace, item_id, expected_version=1, now=1.0, text=text, importance=2.0
    )
    expect(updated.version == 2, "update did not bump the version")
    before = h.snapshot()
    try:
        h.tier.update(h.owner, h.namespace, item_id, expected_version=1, now=2.0, importance=9.0)
    except VersionConflictError as exc:
        expect(exc.details["actual"] == 2, "conflict names the wrong version")
    else:
        raise ContractFailure("a stale update was accepted")
    expect(h.snapshot() == before, "a refused update changed the store")
    versions = [rec["version"] for rec in h.tier.history(h.owner, h.namespace, item_id)]
    expect(versions == [1, 2], f"history is {versions}")
    h.tier.delete(h.owner, h.namespace, item_id, now=3.0)
    records = h.tier.history(h.owner, h.namespace, item_id)
    expect(records[-1]["superseded_by"] == "delete", "deletion left no trace in history")


def check_access(h: Harness) -> None:
    """An outsider can neither read nor change the owner's namespace; nothing changes."""
    item_id = h.tier.write(h.owner, h.namespace, h.new_item("secret"), now=0.0).item_id
    before = h.snapshot()
    vec = h.new_item("probe").vector
    attempts: list[Callable[[], object]] = [
        lambda: h.tier.write(h.outsider, h.namespace, h.new_item("intrusion"), now=1.0),
        lambda: h.tier.get(h.outsider, h.namespace, item_id),
        lambda: h.tier.search(h.outsider, h.namespace, vec, k=3, now=1.0),  # type: ignore[arg-type]
        lambda: h.tier.update(
            h.outsider, h.namespace, item_id, expected_version=1, now=1.0, importance=1.0
        ),
        lambda: h.tier.delete(h.outsider, h.namespace, item_id, now=1.0),
        lambda: h.tier.history(h.outsider, h.namespace, item_id),
    ]
    for attempt in attempts:
        try:
            attempt()
        except AccessDeniedError as exc:
            expect(
                exc.details["namespace"].startswith(h.namespace), "error names the wrong namespace"
            )
        else:
            raise ContractFailure("an outsider got through")
    expect(h.snapshot() == before, "a refused access changed the store")


def check_capacity(h: Harness) -> None:
    """Capacity and token budget hold after every write, batch or single."""
    cap, budget = h.tier.config.capacity, h.tier.config.token_budget
    for step in range(3 * (cap or 8)):
        words = " ".join(f"w{step}_{i}" for i in range(1 + step % 3))
        batch = [WriteRequest(h.owner, h.namespace, h.new_item(words)) for _ in range(1 + step % 2)]
        h.tier.write_many(batch, now=float(step))
        ns = h.tier.namespaces[h.namespace]
        expect(cap is None or len(ns) <= cap, f"{len(ns)} items over capacity {cap}")
        if h.tier.config.mode is NamespaceMode.TOKEN_BUDGET and budget is not None:
            expect(ns.tokens <= budget, f"{ns.tokens} tokens over budget {budget}")
        expect(len(ns.index) == len(ns), "index and items disagree")
        expect(ns.tokens == sum(it.tokens for it in ns.items.values()), "token count drifted")
        expect(ns.nbytes == sum(it.nbytes for it in ns.items.values()), "byte count drifted")


def check_bad_input(h: Harness) -> None:
    """Each malformed write is refused with a clear error and the store is unchanged."""
    h.tier.write(h.owner, h.namespace, h.new_item("keep me"), now=0.0)
    before = h.snapshot()
    dim = h.store.config.dim
    nan = np.full(dim, np.nan, dtype=np.float32)
    bad: list[NewItem] = [
        NewItem(text="", vector=np.ones(dim + 1, dtype=np.float32)),
        NewItem(text="", vector=nan),
        NewItem(
            text="x" * (h.store.ctx.limits.max_text_chars + 1), vector=np.ones(dim, np.float32)
        ),
        NewItem(text=123, vector=np.ones(dim, np.float32)),  # type: ignore[arg-type]
        NewItem(text="", vector=np.ones(dim, np.float32), meta={1: "int key"}),  # type: ignore[dict-item]
        NewItem(text="", vector=np.ones(dim, np.float32), importance=float("inf")),
        NewItem(text="", vector=np.ones(dim, np.float32), meta={"obj": object()}),
    ]
    for item in bad:
        try:
            h.tier.write(h.owner, h.namespace, item, now=1.0)
        except InvalidInputError:
            pass
        else:
            raise ContractFailure(f"accepted a bad item: {item!r:.80}")
        expect(h.snapshot() == before, "a refused write changed the store")
    try:
        h.tier.search(h.owner, h.namespace, nan, k=3, now=1.0)
    except InvalidInputError:
        pass
    else:
        raise ContractFailure("searched with a NaN vector")


def check_state_round_trip(h: Harness, fresh_process: bool = False) -> None:
    """get_state → set_state on a new store (optionally in a new process) gives the same state."""
    for i in range(12):
        h.tier.write(h.owner, h.namespace, h.new_item(f"fact {i}", meta={"i": i}), now=float(i))
    state = h.snapshot()
    clone = MemoryStore(h.store.config)
    clone.set_state(msgpack.unpackb(state, raw=False, strict_map_key=False))
    again = bytes(msgpack.packb(clone.get_state(), use_bin_type=True))
    expect(again == state, "set_state(get_state()) is not the same store")
    if fresh_process:
        expect(_round_trip_in_subprocess(h.store, state) == state, "state differs across processes")


def _round_trip_in_subprocess(store: MemoryStore, packed: bytes) -> bytes:
    code = (
        "import sys, msgpack\n"
        "from hivemem.memory_bus.config import StoreConfig\n"
        "from hivemem.memory_bus.store import MemoryStore\n"
        "cfg = StoreConfig.model_validate_json(sys.argv[1])\n"
        "s = MemoryStore(cfg)\n"
        "s.set_state(msgpack.unpackb(sys.stdin.buffer.read(), raw=False, strict_map_key=False))\n"
        "sys.stdout.buffer.write(msgpack.packb(s.get_state(), use_bin_type=True))\n"
    )
    config_json = json.dumps(store.config.model_dump(mode="json"))
    done = subprocess.run(
        [sys.executable, "-c", code, config_json],
        input=packed,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout


TIER_CHECKS: tuple[Callable[[Harness], None], ...] = (
    check_round_trip,
    check_versions,
    check_access,
    check_capacity,
    check_bad_input,
    check_state_round_trip,
)


def simulate_trace(
    factory: StoreFactory,
    trace: list[str],
    tier: str | TierName = TierName.SHARED,
    oracle: bool = False,
) -> int:
    """Replay a key trace through a capacity-bounded tier; return the number of hits.

    A key found in memory is a hit (and is recalled); a miss writes the key. With
    ``oracle`` the store is told each key's future uses, which Belady needs.
    """
    h = Harness.build(factory, tier)
    positions: dict[str, list[int]] = {}
    for t, key in enumerate(trace):
        positions.setdefault(key, []).append(t)
    if oracle:
        h.store.set_oracle(lambda item, now: _next_use(positions.get(item.meta["key"], []), now))
    by_key: dict[str, int] = {}
    by_id: dict[int, str] = {}
    hits = 0
    for t, key in enumerate(trace):
        if key in by_key:
            h.tier.get(h.owner, h.namespace, by_key[key], now=float(t))
            hits += 1
            continue
        result = h.tier.write(
            h.owner, h.namespace, h.new_item(key, meta={"key": key}), now=float(t)
        )
        by_key[key], by_id[result.item_id] = result.item_id, key
        for victim in result.evicted:
            del by_key[by_id.pop(victim)]
    return hits


def _next_use(times: list[int], now: float) -> float:
    i = bisect.bisect_right(times, now)
    return float(times[i]) if i < len(times) else math.inf
