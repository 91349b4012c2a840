"""Forked children that die with their parent (Linux's ``PR_SET_PDEATHSIG``).

The bus writes snapshots from a forked child (:mod:`hivemem.memory_bus.durability`), and
test harnesses start servers as subprocesses: neither may outlive a parent killed
outright, or a restarted server would race a writer left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def fork_to(write: Callable[[], None]) -> int | None:
    """Run ``write`` in a forked child that then exits; its pid (None if fork failed).

    The child only packs and writes files, then leaves with ``os._exit`` (no cleanup of
    the sockets and threads it did not inherit). It dies with the thread that forked it
    (``PR_SET_PDEATHSIG``), so a killed server leaves no writer behind to race the next
    one, and it never collects garbage (that would touch, and so copy, every page).
    """
    parent = os.getpid()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of fork in a threaded process: the child here runs only
            # ``write``, on data that the forking (owner) thread alone changes.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        log.warning("fork failed; the work is done in this process instead", exc_info=True)
        return None
    if pid:
        return pid
    code = 1
    try:
        gc.disable()
        die_with_parent()
        if os.getppid() == parent:  # else the parent died before the line above
            write()
            code = 0
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        os._exit(code)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.util.find_library("c")
        return ctypes.CDLL(libc).prctl if libc and sys.platform.startswith("linux") else None
    return None


_PRCTL = _prctl()


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when the thread that made it ends
    (``PR_SET_PDEATHSIG``; Linux only: elsewhere False, and nothing is asked).

    For a forked child, or as a ``subprocess.Popen`` ``preexec_fn``, so that a parent
    killed outright (SIGKILL, the kernel's out-of-memory killer) leaves no child behind.
    """
    if _PRCTL is None:
        return False
    return bool(_PRCTL(_PR_SET_PDEATHSIG, sig) == 0)
