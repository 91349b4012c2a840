"""Full garbage collections of a growing store: Python's collector against the bus's freezer.

A full collection walks every tracked object of the process, and Python runs one each
time the objects that outlived collections grow by a quarter. A bus holding a million
items pays it on its owner thread while every client waits, longer each time. While a
``BusServer`` runs, :class:`~hivemem.memory_bus.collector.OldObjectFreezer` freezes what
outlived each full collection, so the next one walks only what came since.

The workload: 1,000 agents each write 64-item batches (text, a 64-d vector, a meta map)
into their private namespace, and read it back, which builds the items (as an agent's
search does), round after round until the store holds ``--items`` items. Each variant runs
in a fresh process, in turn, ``--repeats`` times: ``python`` (the collector as Python sets
it: the baseline) and ``freezer``. Printed: every full collection's pause, the longest
pause, their sum, and the run's time, with the freezer's as ratios to Python's.

Then the same two variants for what RL training runs thousands of: one in-process episode
(``run_episode``) of ``capacity_stream`` in ``benchmarks/scale.py``'s shape (one fact a
tick per agent, a private capacity of 4), with ``run.freeze_old_objects`` false for
the baseline. Printed: the episode's time and the time in the collector.

    python benchmarks/gc_pauses.py --quick   # 256,000 items; 2,000 agents x 12 ticks; ~1 minute
    python benchmarks/gc_pauses.py           # 1,024,000 items; 10,000 agents x 12 ticks; ~4 minutes
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from hivemem.memory_bus.collector import OldObjectFreezer
from hivemem.memory_bus.config import StoreConfig
from hivemem.memory_bus.interfaces import Caller, WriteRequest
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.store import MemoryStore
from scale import GcClock

AGENTS = 1_000
BATCH = 64
DIM = 64


def run(variant: str, items: int) -> dict[str, Any]:
    """Grow a store to ``items`` items under ``variant``; the full collections' pauses."""
    freezer = OldObjectFreezer() if variant == "freezer" else None
    pauses: list[float] = []
    started: list[float] = []

    def timed(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started.append(time.perf_counter())
        else:
            pauses.append(time.perf_counter() - started.pop())

    if freezer is not None:
        freezer.hold()
    gc.callbacks.append(timed)  # after the freezer's: a pause ends once it has frozen
    store = MemoryStore(StoreConfig(dim=DIM), embed=False)
    vectors = np.random.default_rng(1).standard_normal((BATCH, DIM)).astype(np.float32)
    callers = [Caller(f"a{a}", frozenset()) for a in range(AGENTS)]
    begin = time.perf_counter()
    written = built = 0
    while written < items:
        for caller in callers:
            batch = [
                WriteRequest(caller, caller.agent_id, NewItem(f"fact {i}", vectors[i], {"k": i}))
                for i in range(BATCH)
            ]
            store.private.write_many(batch, now=float(written))
            built += len(store.private.namespaces[caller.agent_id].items)  # as a read does
            written += BATCH
            if written >= items:
                break
    seconds = time.perf_counter() - begin
    if freezer is not None:
        freezer.release()
    return {"pauses": pauses, "seconds": seconds, "built": built}


def episode(variant: str, agents: int) -> dict[str, Any]:
    """One in-process RL episode of ``agents`` agents under ``variant``; its time and the
    time spent in the collector."""
    from hivemem.platform.rl.sim import run_episode
    from hivemem.platform.scenario import load_scenario

    freeze = str(variant == "freezer").lower()
    scenario = load_scenario(
        "capacity_stream",
        ["task.params.facts_per_tick=1", "memory.private.capacity=4", f"agents.0.count={agents}",
         f"run.ticks={EPISODE_TICKS}", f"run.freeze_old_objects={freeze}"],
    )  # fmt: skip
    collector = GcClock()
    begin = time.perf_counter()
    run_episode(scenario, tier="private")
    return {"seconds": time.perf_counter() - begin, "gc": collector.seconds}


EPISODE_TICKS = 12


def _child(work: Callable[[str, int], dict[str, Any]], variant: str, n: int, out: Any) -> None:
    out.send(work(variant, n))


def in_fresh_process(
    work: Callable[[str, int], dict[str, Any]], variant: str, n: int
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(work, variant, n, theirs))
    proc.start()
    theirs.close()  # the child's end: a child that dies without an answer ends recv
    try:
        result: dict[str, Any] = ours.recv()
    except EOFError:
        proc.join()
        raise SystemExit(f"the {variant} run died (exit code {proc.exitcode})") from None
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="256,000 items")
    parser.add_argument("--items", type=int, help="items at the end (default 1,024,000)")
    parser.add_argument("--agents", type=int, help="agents of the episode (default 10,000)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant")
    args = parser.parse_args()
    items = args.items or (256_000 if args.quick else 1_024_000)
    agents = args.agents or (2_000 if args.quick else 10_000)
    results = alternating(run, items, args.repeats)
    episodes = alternating(episode, agents, args.repeats)
    print(f"gc pauses: a store growing to {items:,} items ({AGENTS:,} agents, batches of {BATCH})")
    summary: dict[str, dict[str, float]] = {}
    for variant, runs in results.items():
        for i, res in enumerate(runs):
            ms = [p * 1e3 for p in res["pauses"]]
            print(f"{variant:8s} run {i + 1}: {res['seconds']:6.2f} s, {len(ms)} full collections, "
                  f"longest {max(ms, default=0):6.1f} ms, sum {sum(ms):7.1f} ms: "
                  + " ".join(f"{p:.0f}" for p in ms))  # fmt: skip
        summary[variant] = {
            "longest_ms": float(np.median([max(r["pauses"], default=0) * 1e3 for r in runs])),
            "sum_ms": float(np.median([sum(r["pauses"]) * 1e3 for r in runs])),
            "seconds": float(np.median([r["seconds"] for r in runs])),
        }
    print(f"\nan in-process episode: capacity_stream, {agents:,} agents x {EPISODE_TICKS} ticks")
    for variant, runs in episodes.items():
        for i, res in enumerate(runs):
            print(f"{variant:8s} run {i + 1}: {res['seconds']:6.2f} s, in the collector "
                  f"{res['gc']:6.2f} s")  # fmt: skip
    base, new = summary["python"], summary["freezer"]
    print(f"\nlongest_full_collection_ms_python: {base['longest_ms']:.1f}")
    print(f"longest_full_collection_ms_freezer: {new['longest_ms']:.1f}")
    print(
        f"longest_full_collection_freezer_vs_python: {new['longest_ms'] / base['longest_ms']:.3f}"
    )
    print(f"full_collections_time_freezer_vs_python: {new['sum_ms'] / base['sum_ms']:.3f}")
    print(f"run_time_freezer_vs_python: {new['seconds'] / base['seconds']:.3f}")
    seconds = {v: float(np.median([r["seconds"] for r in runs])) for v, runs in episodes.items()}
    print(f"episode_time_freezer_vs_python_{agents // 1000}k: "
          f"{seconds['freezer'] / seconds['python']:.3f}")  # fmt: skip


def alternating(
    work: Callable[[str, int], dict[str, Any]], n: int, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """``work(variant, n)`` for both variants, each in a fresh process, in turn."""
    results: dict[str, list[dict[str, Any]]] = {"python": [], "freezer": []}
    for r in range(repeats):
        for variant in ("python", "freezer") if r % 2 == 0 else ("freezer", "python"):
            results[variant].append(in_fresh_process(work, variant, n))
    return results


if __name__ == "__main__":
    main()
