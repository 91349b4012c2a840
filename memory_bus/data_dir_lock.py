"""One process per data directory: a POSIX lock on its ``LOCK`` file.

Two buses appending to one journal would interleave their records and corrupt it, and
``hivemem bus check --fix`` must never cut a log a running bus appends to. Both take the
directory with :func:`lock_data_dir` first.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hivemem.memory_bus.errors import HivememError

LOCK_NAME = "LOCK"


class DataDirInUseError(HivememError):
    """Another process holds the data directory: two buses on one journal would corrupt it."""

    code = "data_dir_in_use"

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(
            f"the data directory {path} is in use by another process (pid {holder}): stop "
            "that bus first, or give this one its own data directory",
            path=str(path),
            pid=holder,
        )


def lock_data_dir(data_dir: Path) -> int:
    """Hold ``data_dir`` for this process alone; returns the descriptor that holds it.

    A POSIX lock on ``LOCK`` in the directory (which names the holder's pid): the kernel
    drops it when the process ends, however it ends, so a SIGKILLed server's directory is
    free at once; and a forked snapshot writer does not inherit it. It guards against
    other processes only: POSIX locks belong to a process, and closing any descriptor of
    the file drops them, so two journals of one process must not share a directory.

    Raises:
        DataDirInUseError: another process holds it.
    """
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUseError(data_dir, holder) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
