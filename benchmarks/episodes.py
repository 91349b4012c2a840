"""RL episodes (``hivemem.platform.rl.sim.run_episode``): agent hosts over the bus's socket
against the same hosts over ``LocalTransport``, in one run.

Training runs thousands of short episodes, each with its agent hosts and an embedded bus
in one process. Targets, per built-in scenario, the same seeds each:

  - socket (the baseline): the hosts' clients talk to the embedded bus over a loopback
    DEALER, as they did before 2026-12-02;
  - local: they hand their requests to the bus server directly (``LocalTransport``,
    what ``run_episode`` does now).

The two must give the same returns (checked here); printed: seconds per episode of each
and socket/local, the headline ``name: value`` lines last.

    python benchmarks/episodes.py            # 8 episodes per target and scenario
    python benchmarks/episodes.py --quick    # 3
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

from hivemem.platform.rl import sim
from hivemem.platform.scenario import load_scenario

SCENARIOS = ("capacity_stream", "evolving_facts", "relay_qa", "team_insights")


def episodes(name: str, seeds: range, local: bool) -> tuple[float, list[float]]:
    """Seconds per episode and the returns, hosts over LocalTransport or the socket."""
    scenario = load_scenario(name, [])
    tier = sim.policy_tier(scenario, None)
    # the hosts take the socket when they find no server of this process at the address
    no_server = mock.patch.object(sim, "serving_at", lambda address: None)
    with contextlib.nullcontext() if local else no_server:
        sim.run_episode(sim.with_policy(scenario, tier, seed=10_000), tier=tier)  # warm-up
        started = time.perf_counter()
        returns = [
            sim.run_episode(sim.with_policy(scenario, tier, seed=seed), tier=tier).ret()
            for seed in seeds
        ]
    return (time.perf_counter() - started) / len(seeds), returns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 episodes per target")
    args = parser.parse_args()
    seeds = range(3 if args.quick else 8)
    print(f"episodes: seconds per episode, {len(seeds)} seeds per target")
    print(f"{'scenario':16s} {'socket':>8s} {'local':>8s} {'socket/local':>12s}")
    lines = []
    for name in SCENARIOS:
        over_socket, want = episodes(name, seeds, local=False)
        local, got = episodes(name, seeds, local=True)
        if got != want:
            raise SystemExit(f"{name}: returns differ: socket {want}, local {got}")
        print(f"{name:16s} {over_socket:8.3f} {local:8.3f} {over_socket / local:12.2f}")
        lines.append(f"socket_vs_local_episode_seconds_{name}: {over_socket / local:.2f}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
