"""Learned policies: a small scorer trained by ``hivemem train``, served by name.

``learned:PATH`` names a checkpoint wherever a policy name goes (scenario files,
``--set``, ``hivemem compare``). The checkpoint is one JSON file (never a pickle):
a format tag and version, the controller it was trained for, the names of the inputs it
reads (checked against this code's, so a checkpoint from another feature set is refused
rather than misread), the weights, and a SHA-256 of all of that.

The scorer is a linear map or a one-hidden-layer MLP applied to each row on its own, so
it scores any number of candidates and does not care about their order:

- eviction: one row per candidate (``features.eviction_inputs``), one score each; the
  highest score is evicted (ties to the lower id).
- write: one row per proposal (``features.write_features``), one score per operation
  ADD / UPDATE / DELETE / NOOP; the highest is chosen, and UPDATE or DELETE with no
  neighbour is an ADD (:func:`op_decision`, which the write environment applies too).

Training (``hivemem.platform.rl``) calls the same functions, so a policy decides in the
live bus exactly as it did in its environment.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hivemem.memory_bus.errors import ConfigError, InvalidInputError
from hivemem.memory_bus.features import (
    EVICTION_INPUT_NAMES,
    WRITE_FEATURE_NAMES,
    eviction_inputs,
    write_features,
)
from hivemem.memory_bus.interfaces import EvictionContext, Hit, WriteDecision
from hivemem.memory_bus.item import Item, WriteOp
from hivemem.memory_bus.policies.eviction import EVICTION_POLICIES
from hivemem.memory_bus.policies.write import WRITE_POLICIES

FORMAT = "hivemem-policy"
FORMAT_VERSION = 1
CONTROLLERS = ("eviction", "write")
WRITE_OPS: tuple[WriteOp, ...] = (WriteOp.ADD, WriteOp.UPDATE, WriteOp.DELETE, WriteOp.NOOP)


def input_names(controller: str) -> tuple[str, ...]:
    """The inputs a scorer for ``controller`` reads."""
    return EVICTION_INPUT_NAMES if controller == "eviction" else WRITE_FEATURE_NAMES


def output_size(controller: str) -> int:
    """Scores per row: one per candidate (eviction) or one per operation (write)."""
    return 1 if controller == "eviction" else len(WRITE_OPS)


@dataclass
class Scorer:
    """Row-wise scorer: ``relu(x @ w1 + b1) @ w2 + b2`` (or ``x @ w2 + b2`` if linear).

    Attributes:
        controller: ``eviction`` or ``write``.
        hidden: Hidden units; 0 for a linear scorer.
        params: Flat float64 parameter vector (see :meth:`shapes`).
        meta: Free-form facts about training (scenario, seeds, iterations).
    """

    controller: str
    hidden: int
    params: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ConfigError(f"controller must be one of {CONTROLLERS}, got {self.controller!r}")
        if self.hidden < 0:
            raise ConfigError(f"hidden must be >= 0, got {self.hidden}")
        self.params = np.asarray(self.params, dtype=np.float64)
        if self.params.shape != (self.size(self.controller, self.hidden),):
            raise ConfigError(
                f"{self.controller} scorer with hidden={self.hidden} needs "
                f"{self.size(self.controller, self.hidden)} parameters, got {self.params.size}"
            )
        if not np.all(np.isfinite(self.params)):
            raise ConfigError("scorer parameters must be finite")

    @staticmethod
    def shapes(controller: str, hidden: int) -> list[tuple[int, ...]]:
        """Shapes of the parameter blocks, in the order they sit in ``params``."""
        d, k = len(input_names(controller)), output_size(controller)
        if hidden == 0:
            return [(d, k), (k,)]
        return [(d, hidden), (hidden,), (hidden, k), (k,)]

    @classmethod
    def size(cls, controller: str, hidden: int) -> int:
        """Number of parameters."""
        return sum(math.prod(s) for s in cls.shapes(controller, hidden))

    @classmethod
    def init(
        cls, controller: str, hidden: int, rng: np.random.Generator, scale: float = 0.1
    ) -> Scorer:
        """A scorer with small random weights."""
        params = rng.normal(0.0, scale, cls.size(controller, hidden))
        return cls(controller, hidden, params)

    def blocks(self) -> list[np.ndarray]:
        """The parameter blocks as arrays (views into ``params``)."""
        out, at = [], 0
        for shape in self.shapes(self.controller, self.hidden):
            n = math.prod(shape)
            out.append(self.params[at : at + n].reshape(shape))
            at += n
        return out

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores of input rows ``x`` (n, inputs) -> (n, outputs)."""
        b = self.blocks()
        if self.hidden == 0:
            return np.asarray(x @ b[0] + b[1])
        h = np.maximum(x @ b[0] + b[1], 0.0)
        return np.asarray(h @ b[2] + b[3])

    # --- checkpoint ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The checkpoint document (with its checksum)."""
        body = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "controller": self.controller,
            "inputs": list(input_names(self.controller)),
            "hidden": self.hidden,
            "params": [float(v) for v in self.params],
            "meta": self.meta,
        }
        return {**body, "sha256": _digest(body)}

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint to ``path`` (JSON)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, controller: str | None = None) -> Scorer:
        """Read and check a checkpoint.

        Raises:
            ConfigError: missing, unreadable, corrupted (checksum), another format or
                version, another controller than asked for, or other input features.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no policy checkpoint at {path}", path=str(path)) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read policy checkpoint {path}: {exc}", path=str(path)
            ) from exc
        return cls.from_json(doc, str(path), controller)

    @classmethod
    def from_json(cls, doc: Any, where: str, controller: str | None = None) -> Scorer:
        """Check and build a scorer from a checkpoint document."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ConfigError(f"{where} is not a hivemem policy checkpoint", path=where)
        if doc.get("version") != FORMAT_VERSION:
            raise ConfigError(
                f"{where} has checkpoint version {doc.get('version')!r}; "
                f"this hivemem reads version {FORMAT_VERSION}",
                path=where,
            )
        body = {k: v for k, v in doc.items() if k != "sha256"}
        try:
            digest = _digest(body)
        except ValueError:  # json.loads reads NaN and Infinity; the checksum never holds them
            raise ConfigError(
                f"{where} holds a number that is not finite (NaN or Infinity)", path=where
            ) from None
        if doc.get("sha256") != digest:
            raise ConfigError(f"{where} is corrupted (checksum mismatch)", path=where)
        kind = doc.get("controller")
        if controller is not None and kind != controller:
            raise ConfigError(
                f"{where} is a checkpoint of the {kind} controller, not of the {controller} one",
                path=where,
            )
        if kind not in CONTROLLERS:
            raise ConfigError(f"{where} names an unknown controller {kind!r}", path=where)
        if tuple(doc.get("inputs", ())) != input_names(kind):
            raise ConfigError(
                f"{where} was trained on other {kind} inputs than this hivemem computes",
                path=where,
            )
        hidden, meta = doc.get("hidden"), doc.get("meta")
        if isinstance(hidden, bool) or not isinstance(hidden, int):
            raise ConfigError(
                f"{where} has hidden {hidden!r}: a whole number of hidden units is needed",
                path=where,
            )
        if not isinstance(meta, dict):  # `eval` reads the scenario trained on from it
            raise ConfigError(f"{where} has meta {meta!r}: a JSON object is needed", path=where)
        try:
            return cls(kind, hidden, np.asarray(doc["params"], np.float64), meta)
        except ConfigError as exc:  # the scorer's own checks, which know no file
            raise ConfigError(f"{where}: {exc.message}", path=where) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where} has malformed weights: {exc}", path=where) from exc


def _digest(body: dict[str, Any]) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


# --- policies ---------------------------------------------------------------------------


def eviction_choice(scorer: Scorer, features: np.ndarray, ids: np.ndarray) -> int:
    """Position of the candidate the scorer evicts (highest score, ties to the lower id).

    Args:
        scorer: An eviction scorer.
        features: The candidates' ``candidate_features`` rows.
        ids: The candidates' item ids (the tie-break).
    """
    score = scorer.scores(eviction_inputs(features))[:, 0]
    return int(np.lexsort((ids, -score))[0])


class LearnedEvictionPolicy:
    """Evicts by a trained scorer, one victim at a time (the store asks for one).

    Args:
        scorer: A trained eviction scorer.
    """

    name = "learned"

    def __init__(self, scorer: Scorer) -> None:
        if scorer.controller != "eviction":
            raise ConfigError("a learned eviction policy needs an eviction checkpoint")
        self.scorer = scorer

    def select(
        self, candidates: Sequence[Item], features: np.ndarray, n: int, ctx: EvictionContext
    ) -> list[int]:
        """Positions of ``n`` victims, each the best-scored among those left."""
        ids = np.fromiter((it.id for it in candidates), np.int64, len(candidates))
        left = list(range(len(candidates)))
        out: list[int] = []
        for _ in range(n):
            pos = eviction_choice(self.scorer, features[left], ids[left])
            out.append(left.pop(pos))
        return out


def write_decision(
    scorer: Scorer, proposal: Item, neighbours: Sequence[Hit], now: float, key_field: str
) -> WriteDecision:
    """The operation the scorer picks for a proposal: the highest-scored of the four,
    applied by :func:`op_decision` as ``hivemem/WritePolicy-v0`` applies an action."""
    row = write_features(proposal, [(h.score, h.item) for h in neighbours], now, key_field)
    return op_decision(
        int(np.argmax(scorer.scores(row[None, :])[0])), proposal, neighbours, key_field
    )


def op_decision(
    action: int, proposal: Item, neighbours: Sequence[Hit], key_field: str
) -> WriteDecision:
    """The decision for an operation index into ``WRITE_OPS``: the one rule that both the
    served policy and the write environment apply to an operation.

    UPDATE and DELETE act on the most similar neighbour carrying the proposal's key (the
    fact being revised), or the most similar neighbour if none does; with no neighbours
    they become ADD (a rule on the operation alone, so an environment can apply it to
    any agent's action).

    Raises:
        InvalidInputError: ``action`` is not an index of ``WRITE_OPS``.
    """
    if not 0 <= action < len(WRITE_OPS):
        raise InvalidInputError(
            "action", f"{action!r} is not an operation index (0..{len(WRITE_OPS) - 1})"
        )
    op = WRITE_OPS[action]
    if op in (WriteOp.UPDATE, WriteOp.DELETE):
        if not neighbours:
            return WriteDecision(WriteOp.ADD)
        return WriteDecision(op, write_target(proposal, neighbours, key_field))
    return WriteDecision(op)


def write_target(proposal: Item, neighbours: Sequence[Hit], key_field: str) -> int:
    """The neighbour an UPDATE or DELETE acts on."""
    key = proposal.meta.get(key_field)
    for h in neighbours:
        if key is not None and h.item.meta.get(key_field) == key:
            return h.id
    return neighbours[0].id


class LearnedWritePolicy:
    """ADD / UPDATE / DELETE / NOOP by a trained scorer (Memory-R1's operations)."""

    name = "learned"
    needs_neighbours = True

    def __init__(self, scorer: Scorer, key_field: str = "key") -> None:
        if scorer.controller != "write":
            raise ConfigError("a learned write policy needs a write checkpoint")
        self.scorer, self.key_field = scorer, key_field

    def decide(self, proposal: Item, neighbours: Sequence[Hit], now: float) -> WriteDecision:
        """The scorer's decision."""
        return write_decision(self.scorer, proposal, neighbours, now, self.key_field)


def _learned_eviction(path: str, **params: Any) -> LearnedEvictionPolicy:
    if params:
        raise ConfigError(f"learned eviction takes no parameters, got {sorted(params)}")
    return LearnedEvictionPolicy(Scorer.load(path, "eviction"))


def _learned_write(path: str, key_field: str = "key") -> LearnedWritePolicy:
    return LearnedWritePolicy(Scorer.load(path, "write"), key_field)


EVICTION_POLICIES.register_prefix("learned", _learned_eviction)
WRITE_POLICIES.register_prefix("learned", _learned_write)


LEARNED = "learned:"
"""The prefix of a learned policy's name: ``learned:PATH`` of its checkpoint."""

PINNED = "$DATA_DIR/checkpoints/"
"""Where a pinned checkpoint's path starts (:func:`pin_checkpoints`): in the data directory,
wherever that is now."""


def pin_checkpoints(config: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """``config`` (a store configuration as JSON) with every ``learned:PATH`` policy
    naming a copy of its checkpoint kept in ``data_dir``, named by a hash of its content
    (``learned:$DATA_DIR/checkpoints/<hash>.json``; :func:`unpin_checkpoints` makes it a
    path again).

    A bus keeps the configuration its journal was written under, to replay the journal
    under it (:mod:`hivemem.memory_bus.durability`). A path says nothing of what the
    file held then: a checkpoint trained again and written over the old one would
    replay the journal with other weights. Its pinned copy holds the weights that
    decided, and a new checkpoint under the same path is a new configuration.

    Raises:
        ConfigError: a checkpoint cannot be read or copied.
    """
    return _learned_specs(config, lambda path: PINNED + _pinned_copy(Path(path), data_dir))


def unpin_checkpoints(config: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """``config`` with the pinned checkpoints of :func:`pin_checkpoints` as paths in
    ``data_dir``."""
    folder = str(data_dir / "checkpoints") + "/"
    return _learned_specs(config, lambda path: path.replace(PINNED, folder, 1))


def pinned_names(config: dict[str, Any]) -> list[str]:
    """The file names of the pinned checkpoints ``config`` names (in ``checkpoints/``)."""
    found: list[str] = []

    def note(path: str) -> str:
        if path.startswith(PINNED):
            found.append(path[len(PINNED) :])
        return path

    _learned_specs(config, note)
    return found


def _learned_specs(config: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A copy of ``config`` with ``change`` applied to the path of each learned policy."""
    changed = json.loads(json.dumps(config))  # a deep copy of JSON values
    for tier in changed.values():
        if not isinstance(tier, dict):
            continue
        for key in ("eviction", "write_policy"):
            spec = tier.get(key)
            if isinstance(spec, str) and spec.startswith(LEARNED):
                tier[key] = LEARNED + change(spec[len(LEARNED) :])
    return changed


def _pinned_copy(path: Path, data_dir: Path) -> str:
    """The name of ``path``'s copy in ``data_dir``'s checkpoints (made if missing)."""
    try:
        data = path.read_bytes()
        name = f"{hashlib.sha256(data).hexdigest()[:32]}.json"
        target = data_dir / "checkpoints" / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
    except OSError as exc:
        raise ConfigError(
            f"cannot keep a copy of checkpoint {path}: {exc}", path=str(path)
        ) from exc
    return name
