"""Learned policies: the checkpoint format, its errors, and the scorer's decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hivemem.memory_bus.errors import ConfigError, UnknownNameError
from hivemem.memory_bus.features import candidate_features, eviction_inputs
from hivemem.memory_bus.interfaces import EvictionContext, Hit
from hivemem.memory_bus.item import Item, WriteOp
from hivemem.memory_bus.policies import make_eviction_policy, make_write_policy
from hivemem.memory_bus.policies.learned import (
    LearnedEvictionPolicy,
    LearnedWritePolicy,
    Scorer,
    eviction_choice,
)


def _items(n: int, rng: np.random.Generator) -> list[Item]:
    out = []
    for i in range(n):
        v = rng.normal(size=8).astype(np.float32)
        out.append(
            Item(
                id=10 + i,
                tier="private",
                namespace="a",
                text=f"item {i}",
                vector=v / np.linalg.norm(v),
                importance=float(rng.random()),
                created=float(i),
                accessed=float(rng.integers(i, 20)),
                hits=int(rng.integers(0, 5)),
            )
        )
    return out


@pytest.mark.parametrize("controller,hidden", [("eviction", 0), ("eviction", 4), ("write", 3)])
def test_checkpoint_round_trip(tmp_path: Path, controller: str, hidden: int) -> None:
    scorer = Scorer.init(controller, hidden, np.random.default_rng(1))
    scorer.meta = {"scenario": "x"}
    back = Scorer.load(scorer.save(tmp_path / "p.json"), controller)
    assert back.hidden == hidden and back.meta == {"scenario": "x"}
    np.testing.assert_array_equal(back.params, scorer.params)
    x = np.random.default_rng(2).normal(size=(5, len(back.blocks()[0])))
    np.testing.assert_array_equal(back.scores(x), scorer.scores(x))


def _doc(tmp_path: Path) -> tuple[Path, dict]:
    path = Scorer.init("eviction", 0, np.random.default_rng(0)).save(tmp_path / "p.json")
    return path, json.loads(path.read_text())


def test_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    path, doc = _doc(tmp_path)
    doc["params"][0] += 1.0  # a flipped weight: the checksum no longer matches
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="corrupted"):
        Scorer.load(path)
    path.write_text(path.read_text()[:40])  # truncated file
    with pytest.raises(ConfigError, match="cannot read"):
        Scorer.load(path)
    with pytest.raises(ConfigError, match="no policy checkpoint"):
        Scorer.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"version": 99}, "version 99"),
        ({"format": "something-else"}, "not a hivemem policy"),
        ({"inputs": ["age"]}, "other eviction inputs"),
        ({"hidden": 3}, "needs"),
        ({"hidden": 0.5}, "hidden 0.5: a whole number"),  # was read as 0
        ({"hidden": None}, "hidden None: a whole number"),
        ({"meta": ["scenario"]}, r"meta \['scenario'\]: a JSON object"),  # `eval`: a traceback
    ],
)
def test_mismatched_checkpoint_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    path, doc = _doc(tmp_path)
    doc.update(change)
    from hivemem.memory_bus.policies.learned import _digest

    doc["sha256"] = _digest({k: v for k, v in doc.items() if k != "sha256"})
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        Scorer.load(path)


def test_wrong_controller_is_refused_by_name(tmp_path: Path) -> None:
    path, _ = _doc(tmp_path)
    with pytest.raises(ConfigError, match="of the eviction controller, not of the write one"):
        make_write_policy(f"learned:{path}")
    assert isinstance(make_eviction_policy(f"learned:{path}"), LearnedEvictionPolicy)
    with pytest.raises(UnknownNameError, match="learned:"):
        make_eviction_policy("learnd")


def test_eviction_scores_each_row_alone(tmp_path: Path) -> None:
    """Permutation: the same candidate is evicted whatever the order it comes in."""
    rng = np.random.default_rng(3)
    scorer = Scorer.init("eviction", 4, rng)
    items = _items(9, rng)
    policy = LearnedEvictionPolicy(scorer)
    ctx = EvictionContext(now=25.0, rng=rng)
    feats = candidate_features(items, 25.0)
    victim = items[policy.select(items, feats, 1, ctx)[0]].id
    perm = list(rng.permutation(len(items)))
    shuffled = [items[i] for i in perm]
    again = shuffled[policy.select(shuffled, candidate_features(shuffled, 25.0), 1, ctx)[0]].id
    assert victim == again
    score = scorer.scores(eviction_inputs(feats))[:, 0]
    assert victim == items[int(np.argmax(score))].id
    ids = np.asarray([it.id for it in items])
    assert items[eviction_choice(scorer, feats, ids)].id == victim


def test_eviction_follows_its_weights() -> None:
    """A scorer weighting only z_since_access evicts like LRU."""
    rng = np.random.default_rng(4)
    params = np.zeros(Scorer.size("eviction", 0))
    params[1] = 1.0  # z_since_access
    policy = LearnedEvictionPolicy(Scorer("eviction", 0, params))
    items = _items(12, rng)
    feats = candidate_features(items, 30.0)
    pick = policy.select(items, feats, 3, EvictionContext(now=30.0, rng=rng))
    lru = make_eviction_policy("lru").select(items, feats, 3, EvictionContext(now=30.0, rng=rng))
    assert pick == lru


def test_write_decisions_follow_the_scores() -> None:
    rng = np.random.default_rng(5)
    items = _items(3, rng)
    items[1].meta["key"] = "k1"
    proposal = Item(
        id=0, tier="shared", namespace="a", text="new", vector=items[0].vector, meta={"key": "k1"}
    )
    hits = [Hit(it.id, 0.9 - 0.1 * i, it) for i, it in enumerate(items)]
    for op in WriteOp:
        params = np.zeros(Scorer.size("write", 0))
        blocks = Scorer("write", 0, params).blocks()
        blocks[1][["ADD", "UPDATE", "DELETE", "NOOP"].index(op.value)] = 1.0
        decision = LearnedWritePolicy(Scorer("write", 0, params)).decide(proposal, hits, 1.0)
        assert decision.op is op
        if op in (WriteOp.UPDATE, WriteOp.DELETE):
            assert decision.target == items[1].id  # the same-key neighbour, not the nearest
        # with no neighbour, UPDATE/DELETE are not possible
        alone = LearnedWritePolicy(Scorer("write", 0, params)).decide(proposal, [], 1.0)
        assert alone.op in (WriteOp.ADD, WriteOp.NOOP)


def test_a_tier_reads_its_learned_checkpoint_once(tmp_path: Path) -> None:
    """Each new namespace read the file again: one changed or moved while the store ran
    made namespaces evict two ways, or failed the first write of a new one."""
    from hivemem.memory_bus.config import StoreConfig, TierConfig
    from hivemem.memory_bus.interfaces import Caller
    from hivemem.memory_bus.item import NewItem
    from hivemem.memory_bus.store import MemoryStore

    params = np.zeros(Scorer.size("eviction", 0))
    params[1] = 1.0  # evicts the least recently used
    path = Scorer("eviction", 0, params).save(tmp_path / "lru.json")
    tier = TierConfig(capacity=2, eviction=f"learned:{path}")
    store = MemoryStore(StoreConfig(dim=8, private=tier))
    path.unlink()  # or changed: the tier keeps what it read

    def evicted(agent: str) -> list[list[int]]:
        who = Caller(agent)
        return [store.private.write(who, agent, NewItem(f"{agent} {i}"), now=float(i)).evicted for i in range(4)]  # fmt: skip

    a, b = evicted("a"), evicted("b")
    assert a[2:] == [[a_id] for a_id in (1, 2)] and b[2:] == [[5], [6]]


def test_a_scorer_refused_by_its_own_checks_names_the_file(tmp_path: Path) -> None:
    path, doc = _doc(tmp_path)
    doc["hidden"] = 3  # the params are for hidden 0
    body = {k: v for k, v in doc.items() if k != "sha256"}
    from hivemem.memory_bus.policies.learned import _digest

    path.write_text(json.dumps({**body, "sha256": _digest(body)}))
    with pytest.raises(ConfigError, match=f"{path}: eviction scorer with hidden=3"):
        Scorer.load(path, "eviction")
