"""What ``hivemem bus serve`` reads and checks before it binds anything: the journal's
fsync policy, the store configuration and the bus secret file.

Each one that is wrong ends the command with one line that names the file or option and
the problem, and exit status 2 (bad input). They are kept apart from :mod:`hivemem.platform.bus_cli` because they deal
with files and their validation, not with the server: the command's own module then holds
the options and the running of the server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.errors import ConfigError
from hivemem.platform.bus_connect import BAD_INPUT, fail

if TYPE_CHECKING:
    from hivemem.memory_bus.journal import FsyncPolicy
    from hivemem.memory_bus.store import MemoryStore

MIN_SECRET_BYTES = 16
"""The shortest bus secret ``serve`` takes: every token is an HMAC of an agent id under
it, so a short one is found offline from any one token, and the admin's token made."""


def read_or_make_secret(path: Path | None, make: Callable[[], bytes]) -> bytes | None:
    """The bus secret in ``path``, made there first if the file is missing (it and the
    folders made for it readable by their owner alone from the start); None without a
    path. A short secret ends the command; one others may read is warned about."""
    if path is None:
        return None
    try:
        if not path.exists():
            for folder in reversed(path.parents):  # from the top down, each made 0700
                if not folder.exists():
                    folder.mkdir(mode=0o700)
            _create_whole(path, make())
        secret = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        fail(f"cannot use the secret file {path} (--secret-file): {exc.strerror or exc}", BAD_INPUT)
    if not secret:
        fail(f"the secret file {path} is empty: delete it to have one made", BAD_INPUT)
    if len(secret) < MIN_SECRET_BYTES:
        fail(
            f"the secret file {path} holds {len(secret)} bytes: a secret that short is "
            "found offline from any one token, and the admin's token made from it; use "
            f"at least {MIN_SECRET_BYTES} random bytes (delete the file to have 32 made)",
            BAD_INPUT,
        )
    if mode & 0o077:
        typer.echo(
            f"warning: the secret file {path} is open to others ({oct(mode)}): whoever reads "
            f"it can act as any agent, the admin too (chmod 600 {path})",
            err=True,
        )
    return secret


def _create_whole(path: Path, content: bytes) -> None:
    """Make the file ``path`` (readable by its owner only) holding ``content``, whole: it
    is written beside ``path`` first and linked there once complete. Made in place, it
    existed empty for a moment, and a client that waits for the file to appear (a test
    fixture does) could read an empty secret. An existing ``path`` raises, as before.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.link(temp, path)
    finally:
        os.unlink(temp)


def fsync_policy(name: str) -> FsyncPolicy:
    """The journal's fsync policy named ``name``; any other name ends the command."""
    from hivemem.memory_bus.journal import FsyncPolicy

    try:
        return FsyncPolicy(name)
    except ValueError:
        known = ", ".join(p.value for p in FsyncPolicy)
        fail(f"--fsync {name!r} is not an fsync policy (known: {known})", BAD_INPUT)


def empty_store(path: Path | None) -> MemoryStore:
    """An empty store under the configuration in ``path`` (the defaults without one).

    A file that cannot be read or is not a valid StoreConfig, or that names a policy no
    registry knows, ends the command with one line that names the file and the problem.
    """
    from hivemem.memory_bus.store import MemoryStore

    config = _store_config(path)
    if config.oracle_tiers():
        fail(
            f"{path}: {', '.join(config.oracle_tiers())} evicts by the future (oracle), "
            "which only a simulation run's embedded bus knows (hivemem run / compare)",
            BAD_INPUT,
        )
    try:
        return MemoryStore(config)
    except ConfigError as exc:  # policy names and parameters: only their registries know
        fail(f"{path}: {exc}", BAD_INPUT)


def _store_config(path: Path | None) -> StoreConfig:
    if path is None:
        return StoreConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        fail(f"cannot read the store config {path} (--config): {why}", BAD_INPUT)
    try:
        return _parse_store_config(text, str(path))
    except ConfigError as exc:
        fail(exc, BAD_INPUT)


def _parse_store_config(text: str, source: str) -> StoreConfig:
    """``text`` (YAML or JSON) validated into a StoreConfig.

    Raises:
        ConfigError: Every problem found, each with its path in the file and its line, on
            one line, as ``hivemem validate`` names them in scenario files.
    """
    from hivemem.platform.scenario_problems import ScenarioError, read_mapping, validated

    try:
        raw, lines = read_mapping(text, source)
        return validated(StoreConfig, raw, source, lines)
    except ScenarioError as exc:  # one line: a terminal's error line, not a report
        raise ConfigError(f"{source}: {'; '.join(map(str, exc.problems))}") from None
