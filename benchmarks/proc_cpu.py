"""CPU time read from Linux's ``/proc``, for the benchmarks that say where time went.

Elsewhere (no ``/proc``) the readers give 0 or nan rather than fail: the figures they
feed are an explanation beside the measured rates, not the measurement itself.
"""

from __future__ import annotations

import os
from pathlib import Path

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
