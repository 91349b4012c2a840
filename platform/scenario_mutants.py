"""The mutants of the scenario-file fuzzer (:mod:`hivemem.platform.scenario_fuzz`).

Each starts from a built-in scenario (``scenarios/*.yaml``) and is changed once to a few
times: a key deleted or renamed to a near miss, a value replaced by one of another type
or by an extreme number, a known field set to a value past its bounds, a key given twice,
the YAML broken, the top level made a list or emptied. ``mutants(count, seed)`` makes the
same ones in the same order again, so a failure is reproducible by its seed and index.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import yaml
from hivemem.platform.scenario import builtin_names

Path_ = tuple[Any, ...]
"""Where a node is in the loaded YAML: keys and list indices from the top."""


@dataclass(frozen=True)
class Mutant:
    """One mutated scenario file: which built-in it came from, how it was changed, its text."""

    index: int
    base: str
    kinds: tuple[str, ...]
    text: str


# --- values ----------------------------------------------------------------------------

HUGE = [10**9, 10**12, 10**18, 2**63, 2**64, 10**100]
NUMBERS = [0, -1, -(2**63), 1.5, -0.5, 1e-300, 1e308, math.nan, math.inf, -math.inf, *HUGE]
STRINGS = [
    "",
    " ",
    "x",
    "lru",
    "none",
    "null",
    "ünïcödé ✓ 日本語",
    "\u202eevil",  # right-to-left override
    "a\x00b",
    "\U0001f600" * 3,
    "line\nbreak",
    "nosuch.module:Thing",
    "x" * 100_000,
]
OTHERS: list[Any] = [True, False, None, [], [1, "a", None], {}, {"a": {"b": [1]}}, [[[]]]]


def _any_value(rng: np.random.Generator) -> Any:
    pools: list[list[Any]] = [NUMBERS, STRINGS, OTHERS]
    pool = pools[int(rng.integers(len(pools)))]
    return copy.deepcopy(pool[int(rng.integers(len(pool)))])


def _near_miss(rng: np.random.Generator, key: str) -> str:
    """``key`` with one typo: a letter dropped, doubled, swapped or changed in case, or a
    plural, an underscore for a dash, a trailing space."""
    if not key:
        return "x"
    i = int(rng.integers(len(key)))
    edits = [
        key[:i] + key[i + 1 :],
        key[:i] + key[i] + key[i:],
        key[:i] + key[i + 1 : i + 2] + key[i : i + 1] + key[i + 2 :],
        key.upper(),
        key + "s",
        key.replace("_", "-"),
        key + " ",
        key.title(),
    ]
    found = [e for e in edits if e and e != key]
    return found[int(rng.integers(len(found)))] if found else key + "x"


# --- walking the loaded YAML -----------------------------------------------------------


def _paths(node: Any, at: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every node below ``node`` with its path (not ``node`` itself)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield (*at, key), child
        yield from _paths(child, (*at, key))


def _parent(doc: Any, path: Path_) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _pick(rng: np.random.Generator, doc: Any, where: Callable[[Any], bool] = bool) -> Path_ | None:
    found = [p for p, v in _paths(doc) if where(_parent(doc, p))]
    return found[int(rng.integers(len(found)))] if found else None


def _in_mapping(parent: Any) -> bool:
    return isinstance(parent, dict)


# --- structured mutations (on the loaded document) -------------------------------------


def delete_key(rng: np.random.Generator, doc: Any) -> Any:
    path = _pick(rng, doc, _in_mapping)
    if path is not None:
        del _parent(doc, path)[path[-1]]
    return doc


def replace_value(rng: np.random.Generator, doc: Any) -> Any:
    path = _pick(rng, doc)
    if path is not None:
        _parent(doc, path)[path[-1]] = _any_value(rng)
    return doc


def rename_key(rng: np.random.Generator, doc: Any) -> Any:
    path = _pick(rng, doc, _in_mapping)
    if path is not None:
        parent = _parent(doc, path)
        parent[_near_miss(rng, str(path[-1]))] = parent.pop(path[-1])
    return doc


def huge_number(rng: np.random.Generator, doc: Any) -> Any:
    """A number of the file (or a size a run allocates by) made huge, zero or negative."""
    path = _pick(rng, doc)
    numbers = [p for p, v in _paths(doc) if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers:
        path = numbers[int(rng.integers(len(numbers)))]
    if path is not None:
        value = [*HUGE, 0, -1, math.nan, math.inf][int(rng.integers(len(HUGE) + 4))]
        _parent(doc, path)[path[-1]] = value
    return doc


SETTABLE = [
    ("run", "hosts"),
    ("run", "agents_per_host"),
    ("run", "bus_shards"),
    ("run", "bus_spin_us"),
    ("run", "num_cpus"),
    ("run", "seed"),
    ("run", "ticks"),
    ("metrics_port",),
    ("memory", "dim"),
    ("memory", "seed"),
    ("memory", "embedder", "hashes"),
    ("memory", "shared", "capacity"),
    ("memory", "shared", "history_limit"),
    ("memory", "shared", "neighbours"),
    ("memory", "private", "token_budget"),
    ("memory", "shared", "index", "approx_threshold"),
    ("memory", "shared", "index", "build_batch"),
    ("memory", "shared", "index", "hnsw_ef_search"),
    ("memory", "shared", "index", "ivf_nlist"),
    ("memory", "graph", "seeds"),
    ("memory", "graph", "hops"),
    ("memory", "graph", "ppr_alpha"),
    ("memory", "graph", "levels"),
    ("memory", "access", "default_graph_levels"),
    ("memory", "access", "public_namespaces"),
    ("memory", "shared", "eviction_params"),
    ("memory", "shared", "write_params"),
    ("agents", 0, "count"),
    ("agents", 0, "groups"),
    ("agents", 0, "params", "k"),
    ("agents", 0, "params", "group"),
    ("agents", 0, "params", "read_tiers"),
    ("outputs", "dir"),
    ("name",),
    ("task", "params"),
]
"""Fields a mutation sets whether or not the built-in file names them."""

TASK_PARAMS = [
    "entities", "attributes", "values", "facts_per_tick", "questions_per_analyst",
    "changes_per_tick", "as_of_fraction", "redundancy", "keys", "revise_fraction",
    "zipf_a", "drift_every", "drift_shift", "importance_noise", "task_types", "options",
    "episode_ticks",
]  # fmt: skip


def set_field(rng: np.random.Generator, doc: Any) -> Any:
    """A known field (or a task parameter of some family) set to any value, made where
    the file lacks it."""
    if rng.random() < 0.4 and isinstance(doc.get("task"), dict):
        path: Path_ = ("task", "params", str(rng.choice(TASK_PARAMS)))
    else:
        path = SETTABLE[int(rng.integers(len(SETTABLE)))]
    node = doc
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return doc
    if isinstance(node, dict):
        node[path[-1]] = (
            _any_value(rng)
            if rng.random() < 0.6
            else [*HUGE, 0, -1][int(rng.integers(len(HUGE) + 2))]
        )
    return doc


def retype_container(rng: np.random.Generator, doc: Any) -> Any:
    """A mapping made a list of its items, or a list a mapping of its indices."""
    path = _pick(rng, doc, lambda p: True)
    if path is None:
        return doc
    parent, key = _parent(doc, path), path[-1]
    value = parent[key]
    if isinstance(value, dict):
        parent[key] = [{k: v} for k, v in value.items()]
    elif isinstance(value, list):
        parent[key] = {str(i): v for i, v in enumerate(value)}
    else:
        parent[key] = [value]
    return doc


def many_roles(rng: np.random.Generator, doc: Any) -> Any:
    """The roster repeated: many entries, each within its own bound, huge in sum."""
    agents = doc.get("agents")
    if isinstance(agents, list) and agents and isinstance(agents[0], dict):
        times, count = int(rng.choice([2, 10, 50])), int(rng.choice([1, 1_000_000]))
        doc["agents"] = [dict(agents[0], count=count) for _ in range(times)]
    return doc


def unicode_text(rng: np.random.Generator, doc: Any) -> Any:
    """A string of the file (a name, a role, a policy, a key) replaced by odd unicode."""
    strings = [p for p, v in _paths(doc) if isinstance(v, str)]
    odd = ["ünïcödé", "日本語", "\u202e", "\U0001f600", "a\tb", "\x7f", "\ufeffname", "x" * 10_000]
    choice = odd[int(rng.integers(len(odd)))]
    if strings and rng.random() < 0.7:
        path = strings[int(rng.integers(len(strings)))]
        _parent(doc, path)[path[-1]] = choice
    else:
        key = _pick(rng, doc, _in_mapping)
        if key is not None:
            parent = _parent(doc, key)
            parent[choice] = parent.pop(key[-1])
    return doc


STRUCTURED: list[Callable[[np.random.Generator, Any], Any]] = [
    delete_key,
    replace_value,
    rename_key,
    huge_number,
    set_field,
    retype_container,
    many_roles,
    unicode_text,
]


# --- mutations of the text -------------------------------------------------------------


def duplicate_key(rng: np.random.Generator, text: str) -> str:
    """A ``key: value`` line given twice in its mapping."""
    lines = text.splitlines()
    keyed = [
        i
        for i, line in enumerate(lines)
        if ":" in line and not line.lstrip().startswith(("#", "-"))
    ]
    if not keyed:
        return text
    i = keyed[int(rng.integers(len(keyed)))]
    return "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]) + "\n"


def broken_yaml(rng: np.random.Generator, text: str) -> str:
    """Text cut short, a bracket or quote left open, a tab indent, a stray character."""
    i = int(rng.integers(len(text) + 1))
    edits = [
        text[:i],
        text[:i] + "[" + text[i:],
        text[:i] + "{" + text[i:],
        text[:i] + '"' + text[i:],
        text[:i] + "\t" + text[i:],
        text[:i] + ": :" + text[i:],
        text[:i] + "\n  - x\n" + text[i:],
        text[:i] + "&a" + text[i:],
        text[:i] + "*nosuch" + text[i:],
        text[:i] + "%" + text[i:],
        text[:i] + "\x00" + text[i:],
        text[:i] + "\ud800" + text[i:],
    ]
    return edits[int(rng.integers(len(edits)))]


def whole_file(rng: np.random.Generator, text: str) -> str:
    """Something else than a mapping at the top, or anchors that make a huge or cyclic node."""
    others = [
        "",
        "# only a comment\n",
        "---\n",
        "- " + "\n  ".join(text.splitlines()) + "\n",
        "[]\n",
        "42\n",
        "null\n",
        "name: x\n" * 3,
        "a: &x [*x]\n",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(
            f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        text + "\n---\n" + text,
        "x" * 200_000,
        text.replace("\n", "\r\n"),
        "\ufeff" + text,
    ]
    return others[int(rng.integers(len(others)))]


TEXTUAL: list[Callable[[np.random.Generator, str], str]] = [duplicate_key, broken_yaml, whole_file]


# --- mutants ---------------------------------------------------------------------------


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: the same text, sooner


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=1_000_000)


def builtin_texts() -> dict[str, str]:
    """The text of every built-in scenario, by name."""
    folder = resources.files("hivemem.scenarios")
    return {name: (folder / f"{name}.yaml").read_text(encoding="utf-8") for name in builtin_names()}


def mutants(count: int, seed: int) -> Iterator[Mutant]:
    """``count`` mutants of the built-in scenarios, the same for the same ``seed``.

    Four in five are structured (one to three changes to the loaded document, dumped
    again as YAML); one in five changes the text itself.
    """
    rng = np.random.default_rng(seed)
    texts = builtin_texts()
    names = sorted(texts)
    loaded = {name: yaml.safe_load(text) for name, text in texts.items()}
    for index in range(count):
        base = names[index % len(names)]
        if rng.random() < 0.8:
            doc = copy.deepcopy(loaded[base])
            kinds = []
            for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
                mutation = STRUCTURED[int(rng.integers(len(STRUCTURED)))]
                kinds.append(mutation.__name__)
                doc = mutation(rng, doc)
            text = _dump(doc)
        else:
            textual = TEXTUAL[int(rng.integers(len(TEXTUAL)))]
            kinds, text = [textual.__name__], textual(rng, texts[base])
        yield Mutant(index, base, tuple(kinds), text)
