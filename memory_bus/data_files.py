"""The files of a data directory: their names, their modes, and writing them durably.

Files in the data directory:

- ``journal.log``: records framed as ``[length u32 LE][crc32 u32 LE][msgpack payload]``,
  written with one ``write()`` each on an ``O_APPEND`` descriptor (no user-space buffer).
- ``journal.<seq>.log``: earlier parts of the log, closed when a snapshot began; ``seq``
  (20 digits) is the last record each holds.
- ``snapshot.msgpack``: ``{"seq": last record included, "state": ...}`` in the same
  framing, written to a temporary file (``snapshot.<pid>.tmp``), fsynced and renamed
  over the old one.
- ``LOCK``: the pid of the process that holds the directory
  (:func:`~hivemem.memory_bus.data_dir_lock.lock_data_dir`); a
  second bus on the same directory is refused, since two writers would corrupt the log.
- ``store_config.json``: the store configuration the records of the log were written
  under (:meth:`~hivemem.memory_bus.journal.Journal.save_config`): a restart under another
  one replays them under this one first (:mod:`hivemem.memory_bus.durability`).
  ``checkpoints/``: copies of the learned policies' checkpoints it names, by content
  (:func:`~hivemem.memory_bus.policies.learned.pin_checkpoints`).
- ``shard.json``: ``{"index": i, "count": n}``, the place in a sharded bus of the store
  that wrote the directory (unsharded: 0 of 1), which fixes the ids it hands out
  (:func:`check_shard`): a restart in another place is refused.
- ``epoch``: a random id made with the directory, which the bus's event marks carry: the
  event numbers go on across restarts for as long as it stays the same.

These are apart from :mod:`hivemem.memory_bus.journal` because more than the journal
works them: the offline checker (:mod:`hivemem.memory_bus.data_check`) reads the same
names and parts, and other writers of small files replace them the same durable way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

from hivemem.memory_bus.errors import ConfigError

log = logging.getLogger(__name__)

LOG_NAME = "journal.log"
SNAPSHOT_NAME = "snapshot.msgpack"
CONFIG_NAME = "store_config.json"
EPOCH_NAME = "epoch"
SHARD_NAME = "shard.json"
PART_NAME = re.compile(r"journal\.(\d{20})\.log")


def fsync_dir(directory: Path) -> None:
    """fsync ``directory``: the names made, renamed or removed in it are on the disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, text: str, suffix: str = ".tmp", mode: int = 0o644) -> None:
    """Make ``text`` the whole of ``path``, on the disk: written beside it (``path`` +
    ``suffix``, made with ``mode`` less the umask), fsynced, renamed over it, and the
    folder fsynced. A crash at any point leaves the old file or the new one, never a part
    (nor, after a power cut, an empty file where the rename was)."""
    tmp = path.with_name(path.name + suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
"""The modes of a data directory and its files: its owner's alone. They hold every
agent's memories, private tiers included (the tokens that reach them stay out of them:
:mod:`hivemem.memory_bus.row_auth`)."""


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` if missing, and take every access but its owner's from it and
    the files in it this process owns (a directory made under an open umask, or by an
    older hivemem). What another user owns (a group's shared folder, a file root left
    there) is left as it is, with a warning: a bus that started on it before still does.
    """
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    closed, left = [], []
    for path in [data_dir, *data_dir.iterdir()]:
        info = path.lstat()
        if path.is_symlink() or not info.st_mode & 0o077:
            continue
        try:
            if info.st_uid != os.geteuid():
                raise PermissionError
            path.chmod(PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)
            closed.append(path.name)
        except PermissionError:
            left.append(path.name)
    for names, what in ((closed, "took group and other access from"),
                        (left, "cannot close (another user's) group and other access to")):  # fmt: skip
        if names:
            log.warning(
                "%s: %s %s (a data directory is its owner's alone)",
                data_dir, what, ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else ""),
            )  # fmt: skip


def log_parts(data_dir: Path) -> list[tuple[int, Path]]:
    """The closed parts of the log in ``data_dir``, ``(last seq, path)`` in order."""
    found = ((PART_NAME.fullmatch(p.name), p) for p in data_dir.glob("journal.*.log"))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def directory_epoch(data_dir: Path) -> str:
    """The identity of ``data_dir``'s history, made once and kept in ``epoch``
    (:meth:`~hivemem.memory_bus.journal.Journal.epoch`)."""
    path = data_dir / EPOCH_NAME
    with contextlib.suppress(FileNotFoundError):
        found = path.read_text().strip()
        if found:
            return found
    made = secrets.token_hex(8)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "w") as out:
        out.write(made + "\n")
    os.replace(tmp, path)
    fsync_dir(data_dir)
    return made


def read_store_config(data_dir: Path) -> dict[str, Any] | None:
    """The store configuration the log's records in ``data_dir`` were written under
    (:meth:`~hivemem.memory_bus.journal.Journal.written_config`)."""
    try:
        found = json.loads((data_dir / CONFIG_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{data_dir / CONFIG_NAME} is damaged ({exc}); it names the store configuration "
            "the journal was written under: restore it, or delete it to replay the journal "
            "under this bus's configuration"
        ) from exc
    return found if isinstance(found, dict) else None


def save_store_config(data_dir: Path, config: dict[str, Any]) -> None:
    """Keep ``config`` in ``data_dir`` as the one the records from now on are written under
    (:meth:`~hivemem.memory_bus.journal.Journal.save_config`)."""
    if read_store_config(data_dir) == config:
        return
    text = json.dumps(config, indent=1, sort_keys=True)
    replace_durably(data_dir / CONFIG_NAME, text, f".{os.getpid()}.tmp", PRIVATE_FILE)


def check_shard(data_dir: Path, shard: tuple[int, int]) -> None:
    """Refuse a store at ``shard`` (``(index, count)``) on a directory written by a store
    at another place in a sharded bus, and keep ``shard`` in a new one.

    Shard ``i`` of ``n`` hands out ids ``1 + i``, ``1 + i + n``, ...; the journal holds
    requests, not the ids given, so replayed at another place it would give the items
    other ids than their clients were told. A directory from before the place was kept
    (one that holds a journal, snapshot or store configuration but no ``shard.json``) is
    taken as unsharded, 0 of 1: ``hivemem bus serve``, the one way to give a bus a data
    directory then but the Python API, serves unsharded. An empty one takes ``shard``.

    Raises:
        ConfigError: the directory was written at another place, or ``shard.json`` is
            damaged; the message names both places.
    """
    path = data_dir / SHARD_NAME
    try:
        found = json.loads(path.read_text())
        kept = (int(found["index"]), int(found["count"]))
    except FileNotFoundError:
        kept = None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{path} is damaged ({exc}); it names the place in a sharded bus of the store "
            f'that wrote {data_dir}: restore it (as {{"index": i, "count": n}})'
        ) from exc
    old = kept is None and _holds_history(data_dir)
    if old:
        kept = (0, 1)
    if kept is not None and kept != tuple(shard):
        raise ConfigError(
            f"the data directory {data_dir} was written by shard {kept} (index, count) of "
            f"its bus{' (kept no shard.json: taken as unsharded)' if old else ''}; this "
            f"store is shard {tuple(shard)}, and its journal replayed there would give "
            f"other ids than its clients were told. Start it as shard {kept}"
            + (
                f', or write {{"index": i, "count": n}} to {path} if it was shard i of n'
                if old
                else ""
            ),
            data_dir=str(data_dir),
            written=list(kept),
            asked=list(shard),
        )
    if kept is None or old:
        text = json.dumps({"index": shard[0], "count": shard[1]})
        replace_durably(path, text, f".{os.getpid()}.tmp", PRIVATE_FILE)


def _holds_history(data_dir: Path) -> bool:
    """Whether a bus has written ``data_dir`` before (a log, a snapshot, a configuration)."""
    if any((data_dir / name).exists() for name in (CONFIG_NAME, SNAPSHOT_NAME)):
        return True
    with contextlib.suppress(FileNotFoundError):
        if (data_dir / LOG_NAME).stat().st_size:
            return True
    return bool(log_parts(data_dir))
