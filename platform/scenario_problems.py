"""Problems in scenario files, found and put into words with their path and line.

``read_mapping`` reads YAML with the line of every dotted path, refusing what loading
would hide (a key given twice in one mapping, a node that holds itself); ``validated``
turns pydantic's errors into problems (:class:`Problem`) named as the file writes them,
each with its line and a "did you mean". They are apart from the scenario models because
they know nothing of scenarios: ``bus serve --config`` reports a store config file's
mistakes with them too.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from hivemem.memory_bus.errors import HivememError, UnknownNameError
from pydantic import BaseModel, Tag, ValidationError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario file."""

    path: str
    message: str
    line: int | None = None
    setting: str | None = None
    """The override (``key=value``: ``--set``, a shorthand such as ``--hosts``, or a
    ``compare`` setting) the value at ``path`` came from, if not from the file."""

    def __str__(self) -> str:
        if self.setting is not None:
            where = f" (override {_shortened(self.setting)})"
        else:
            where = f" (line {self.line})" if self.line else ""
        return f"{_shortened(self.path or '<file>')}{where}: {_shortened(self.message)}"


LONGEST_WORD = 80
"""Characters of one word (a name, a value) a problem shows; the rest are counted."""

LONGEST_TEXT = 400
"""Characters of a problem's path, or of its message, shown once long words are cut."""


def _shortened(text: str) -> str:
    """``text`` with each word past :data:`LONGEST_WORD` characters cut in its middle,
    then the whole past :data:`LONGEST_TEXT`: a problem echoes the file's names and
    values, and a 100,000-character key made a 100,000-character error line."""
    text = re.sub(
        rf"\S{{{LONGEST_WORD + 1},}}",
        lambda m: f"{m[0][:50]}...({len(m[0]) - 70:,} characters left out)...{m[0][-20:]}",
        text,
    )
    if len(text) <= LONGEST_TEXT:
        return text
    return f"{text[:300]}...({len(text) - 360:,} characters left out)...{text[-60:]}"


SHOWN_PROBLEMS = 10
"""Problems a :class:`ScenarioError`'s message lists; ``problems`` holds them all."""


def from_settings(problems: list[Problem], settings: list[str]) -> list[Problem]:
    """``problems``, those about a value a ``--set key=value`` gave (at ``key`` or under
    it) naming that setting instead of a line: the file's line held the value replaced
    (``--set run.ticks=abc`` was reported at the line of ``ticks: 40``)."""
    keys = [(s.split("=", 1)[0].strip(), s) for s in settings if "=" in s]
    out = []
    for p in problems:
        given = [s for key, s in keys if p.path == key or p.path.startswith(key + ".")]
        out.append(dataclasses.replace(p, line=None, setting=given[-1]) if given else p)
    return out


class ScenarioError(HivememError):
    """A scenario file that cannot run; lists the first :data:`SHOWN_PROBLEMS` problems
    found (a file of 5,000 roster entries with one mistake each made 5,000 lines), and
    holds every one in ``problems``."""

    code = "invalid_scenario"

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        shown = [f"  - {p}" for p in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            shown.append(f"  - and {len(problems) - SHOWN_PROBLEMS:,} more")
        lines = "\n".join(shown)
        # the source whole: a file name is what the reader needs (and the OS bounds it)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


M = TypeVar("M", bound=BaseModel)


def read_mapping(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """YAML (or JSON) text that must hold a mapping, and the line of each dotted path.

    Raises:
        ScenarioError: not YAML, not a mapping at the top, a key given twice in one
            mapping, or a node that holds itself.
    """
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # parsed once: the nodes give the lines, then the data
        root = loader.get_single_node()
        lines, problems = _line_map(root)
        if problems:  # checked before loading: a node that holds itself never ends
            raise ScenarioError(source, problems)
        raw = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        why = getattr(exc, "problem", None) or exc
        raise ScenarioError(source, [Problem("", f"not valid YAML: {why}", line)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise ScenarioError(source, [Problem("", f"expected a mapping at the top, got {got}")])
    return raw, lines


def validated(model: type[M], raw: dict[str, Any], source: str, lines: dict[str, int]) -> M:
    """``raw`` validated into ``model``; every problem named with its path, line and
    "did you mean" (the reporting ``hivemem validate`` and ``bus serve --config`` share).

    Raises:
        ScenarioError: each problem found.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [problem_from_error(e, lines, model=model) for e in exc.errors()]
        raise ScenarioError(source, problems) from None


def unknown_name(kind: str, name: str, known: typing.Iterable[str]) -> str:
    """The message for an unknown ``name`` of a ``kind``: a "did you mean", then the known
    (:class:`UnknownNameError`'s, so a file's problem reads as the store's error does)."""
    return UnknownNameError(kind, name, known).message


def problem_from_error(
    err: Any, lines: dict[str, int], prefix: tuple[Any, ...] = (), *, model: type[BaseModel]
) -> Problem:
    """One of pydantic's errors in validating ``model``, as a Problem at its path in the
    file (under ``prefix``) and its line in ``lines``."""
    loc, _ = _walk(model, tuple(err["loc"]))
    path = ".".join(str(x) for x in prefix + loc)
    if err["type"] == "extra_forbidden":
        _, parent = _walk(model, tuple(err["loc"])[:-1])
        known = list(parent.model_fields) if _is_model(parent) else []
        msg = unknown_name("key", str(loc[-1]), known) if known else f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        msg = "required, missing"
    elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
        msg = str(err["ctx"]["error"])  # without pydantic's "Value error, "
    else:
        msg = err["msg"]
    return Problem(path, msg, lines.get(path) or lines.get(".".join(path.split(".")[:-1])))


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """``loc`` as written in the file, and what it leads to inside ``model`` (a model, a
    tagged union, another annotation, or None where the file has a key the model lacks).

    Pydantic puts a tagged union member's tag after the field (the ``hashing`` of
    ``memory.embedder.hashing.hashes``); the file has no such key, so it is dropped.
    """
    written: list[Any] = []
    current: Any = model
    for part in loc:
        tags = _tags(current)
        if str(part) in tags:
            current = tags[str(part)]
            continue
        written.append(part)
        if isinstance(part, int):  # an index into a list: the list's model stays
            continue
        info = current.model_fields.get(str(part)) if _is_model(current) else None
        if info is None:
            current = None
        else:
            current = info.annotation if _tags(info.annotation) else _model_in(info.annotation)
    return tuple(written), current


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tags(annotation: Any) -> dict[str, Any]:
    """Tag -> model of a union of ``Annotated[Model, Tag(...)]`` members, else {}."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    found: dict[str, Any] = {}
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            inner, *extra = typing.get_args(arg)
            found.update({m.tag: inner for m in extra if isinstance(m, Tag)})
    return found


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None`` or ``list[X]``, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


def _line_map(root: yaml.Node | None) -> tuple[dict[str, int], list[Problem]]:
    """Dotted path of every node under ``root`` -> its 1-based line; and the problems
    that loading hides: a key given twice in one mapping (YAML keeps the last silently),
    and a node that holds itself (an alias inside its own anchor, ``a: &x [*x]``)."""
    out: dict[str, int] = {}
    problems: list[Problem] = []
    inside: set[int] = set()  # the nodes being walked: meeting one again is a cycle
    walked: set[int] = set()  # the nodes walked once: an alias of one is not walked again

    def walk(node: Any, path: str) -> None:
        line = node.start_mark.line + 1
        if path:
            out.setdefault(path, line)
        if id(node) in inside:
            problems.append(Problem(path, "holds itself (an alias inside its own anchor)", line))
            return
        if id(node) in walked:  # aliases of aliases: paths without end ("billion laughs")
            return
        walked.add(id(node))
        inside.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                key = f"{path}.{k.value}" if path else str(k.value)
                here = k.start_mark.line + 1
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":  # "<<": a merge
                    if k.value in first:
                        why = f"duplicate key {k.value!r} (first on line {first[k.value]})"
                        problems.append(Problem(key, why, here))
                    first.setdefault(k.value, here)
                out.setdefault(key, here)
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{path}.{i}" if path else str(i))
        inside.discard(id(node))

    if root is not None:
        walk(root, "")
    return out, problems
