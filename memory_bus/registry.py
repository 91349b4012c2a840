"""Plug-ins by name: built-ins register a short name, anything else is ``"module:Class"``.

A prefix handler covers names with a scheme, such as ``learned:PATH`` for a trained
policy checkpoint; it is registered by the module that knows how to load it, so this
module imports nothing optional.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, Generic, NoReturn, TypeVar

from hivemem.memory_bus.errors import ConfigError, HivememError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


def plugin_failed(who: str, exc: Exception, **details: Any) -> NoReturn:
    """Raise what stands for ``exc``, raised by the plug-in code ``who`` names (an
    eviction or write policy a namespace runs, an agent's ``plan``); called in its
    ``except`` block. ``details`` go on the error (the plug-in's name).

    A plug-in's own error (a bug in it, a checkpoint that does not fit) failed the write
    as an ``internal`` error that named neither the plug-in nor what went wrong; it is a
    :class:`ConfigError` naming both now, its traceback logged for the plug-in's author.
    A hivemem error passes as it is, and so does running out of memory.

    Example:
        >>> try:
        ...     plugin_failed("eviction policy 'mine:Policy'", KeyError("age"))
        ... except ConfigError as err:
        ...     print(err)
        eviction policy 'mine:Policy' raised KeyError: 'age'
    """
    if isinstance(exc, HivememError | MemoryError):
        raise exc
    log.warning("%s raised", who, exc_info=exc)
    raise ConfigError(f"{who} raised {type(exc).__name__}: {exc}", **details) from exc


def plugin_answered(who: str, answer: Any, wanted: str, **details: Any) -> NoReturn:
    """Raise a :class:`ConfigError`: the plug-in code ``who`` names answered ``answer``
    (shown cut to 200 characters), which is not what its protocol asks for, ``wanted``.
    ``details`` go on the error (the plug-in's name).

    Example:
        >>> try:
        ...     plugin_answered("agent 'a-0' (type 'mine:Agent'): act", None, "an Action")
        ... except ConfigError as err:
        ...     print(err)
        agent 'a-0' (type 'mine:Agent'): act answered None; it must return an Action
    """
    raise ConfigError(f"{who} answered {answer!r:.200}; it must return {wanted}", **details)


class Registry(Generic[T]):
    """Factories of one kind of plug-in, looked up by name.

    Example:
        >>> reg: Registry[object] = Registry("thing")
        >>> _ = reg.register("box")(dict)
        >>> reg.create("box", size=1)
        {'size': 1}
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._prefixes: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory (usually a class) under ``name``."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return add

    def register_prefix(self, prefix: str, factory: Callable[..., T]) -> None:
        """Names ``prefix:REST`` call ``factory(REST, **params)``."""
        self._prefixes[prefix] = factory

    def names(self) -> list[str]:
        """The registered short names, sorted."""
        return sorted(self._factories)

    def prefixes(self) -> list[str]:
        """The registered name schemes, as ``"prefix:..."``, sorted."""
        return sorted(f"{p}:..." for p in self._prefixes)

    def factory(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (or ``"module:Class"``), without calling it.

        Raises:
            UnknownNameError: no such name, with the closest ones.
            ConfigError: a prefixed name (its factory needs the rest of the name).
        """
        factory, rest = self._resolve(name)
        if rest is not None:
            raise ConfigError(f"{self.kind} {name!r} is built by its prefix's loader", name=name)
        return factory

    def check(self, name: str, **params: Any) -> None:
        """Raise if ``name`` cannot be built: a prefixed name is built (so a checkpoint it
        names is read and checked), any other is looked up and ``params`` are checked
        against its factory's parameters, without building it (a scenario validated
        ``ok`` and then failed to start with a parameter the policy lacks).

        Raises:
            UnknownNameError: no such name, or a parameter the factory does not take,
                with the closest ones.
            ConfigError: the prefix's loader refused it, or a required parameter is missing.
        """
        factory, rest = self._resolve(name)
        if rest is not None:
            self.create(name, **params)
            return
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # nothing to read the parameters from
            return
        try:
            signature.bind(**params)
        except TypeError as exc:
            named = [
                p.name
                for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            unknown = sorted(set(params) - set(named))
            if unknown:
                kind = f"{self.kind} {name!r} parameter"
                raise UnknownNameError(kind, unknown[0], named) from None
            raise ConfigError(
                f"bad parameters for {self.kind} {name!r}: {exc}", name=name
            ) from None

    def create(self, name: str, **params: Any) -> T:
        """Build the plug-in called ``name`` with ``params``.

        Raises:
            UnknownNameError: no such name, with the closest ones.
            ConfigError: the factory refused the parameters, or the import failed.
        """
        factory, rest = self._resolve(name)
        try:
            return factory(rest, **params) if rest is not None else factory(**params)
        except (TypeError, ValueError) as exc:  # a missing or unknown one; float("high")
            raise ConfigError(f"bad parameters for {self.kind} {name!r}: {exc}", name=name) from exc

    def _resolve(self, name: str) -> tuple[Callable[..., T], str | None]:
        """The factory for ``name`` and, for a prefixed name, the part after the prefix."""
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind} name must be a str, got {type(name).__name__}")
        if name in self._factories:
            return self._factories[name], None
        if ":" in name:
            head, tail = name.split(":", 1)
            if head in self._prefixes:
                return self._prefixes[head], tail
            return self._import(head, tail, name), None
        raise UnknownNameError(self.kind, name, [*self._factories, *self.prefixes()])

    def _import(self, module_name: str, attr: str, name: str) -> Callable[..., T]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import {self.kind} {name!r}: {exc}", name=name) from exc
        try:
            factory: Callable[..., T] = getattr(module, attr)
        except AttributeError:
            known = _own_callables(module)
            raise UnknownNameError(self.kind, attr, known, module=module_name) from None
        if isinstance(factory, ModuleType) or not callable(factory):
            what = "a module" if isinstance(factory, ModuleType) else _a(type(factory).__name__)
            raise ConfigError(
                f"{self.kind} {name!r} is {what}, not a class or a function", name=name
            )
        return factory


def _own_callables(module: ModuleType) -> list[str]:
    """The names in ``module`` a plug-in name could mean: its ``__all__`` if it has one,
    else the public classes and functions it defines (not its dunders, not the modules,
    classes and functions it imports: a "did you mean 'json'" helps no one)."""
    listed = getattr(module, "__all__", None)
    names = listed if listed is not None else [n for n in vars(module) if not n.startswith("_")]
    own = [(n, getattr(module, n, None)) for n in names]
    return [
        n
        for n, obj in own
        if callable(obj)
        and not isinstance(obj, ModuleType)
        and (listed is not None or getattr(obj, "__module__", None) == module.__name__)
    ]


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
