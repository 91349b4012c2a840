"""CPU time read from Linux's ``/proc``, for the benchmarks that say where time went.

Elsewhere (no ``/proc``) the readers give 0 or nan rather than fail: the figures they
feed are an explanation beside the measured rates, not the measurement itself.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import numpy as np

CLOCK = os.sysconf("SC_CLK_TCK")


def cpu_of(stat_path: str) -> float:
    """utime + stime of a process or thread (its ``stat`` file), in seconds, to the
    clock tick (0 if it is gone)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK


def thread_run_time(pid: int, tid: int) -> float:
    """Seconds thread ``tid`` of process ``pid`` has run, to the nanosecond (its
    ``schedstat``); nan if unknown."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError):
        return float("nan")


def machine_cpu() -> tuple[float, float]:
    """CPU seconds of every core so far: (not available to us, in all).

    Busy counts the host's steal time: a core the host took was not ours to use either.
    Guest time is inside user time already. nan, nan if unknown.
    """
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    busy = user + nice + system + irq + softirq + steal
    return busy / CLOCK, (busy + idle + iowait) / CLOCK


def page_cost(chunk: int, chunks: int = 256) -> tuple[float, float]:
    """Seconds to copy ``chunk`` bytes into memory this process never touched, and into
    the same memory once touched (the best of three passes over ``chunks`` chunks each).

    What a store pays to keep what it is sent, beyond the copy itself: on a virtual
    machine whose host backs guest memory lazily (and takes freed memory back), a first
    touch costs several times the copy, and how much varies with the host's state.
    """
    src = np.ones(chunk, dtype=np.uint8)
    block = mmap.mmap(-1, chunk * chunks)
    rows = np.frombuffer(block, dtype=np.uint8).reshape(chunks, chunk)
    passes = []
    for _ in range(4):  # the first into fresh pages
        started = time.perf_counter()
        for i in range(chunks):
            rows[i] = src
        passes.append((time.perf_counter() - started) / chunks)
    del rows
    block.close()
    return passes[0], min(passes[1:])
