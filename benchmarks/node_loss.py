"""A node removed from a multi-node Ray cluster mid-run: the run ends as if nothing happened.

    python benchmarks/node_loss.py            # relay_qa, 30 ticks, 4 nodes, 4 hosts
    python benchmarks/node_loss.py --quick    # 12 ticks, 3 nodes, 3 hosts (the CI test)

Starts a ``ray.cluster_utils.Cluster`` on this machine (a head and worker nodes, all on
this machine's own interface address, as ``tests/integration/runner/test_multinode.py``
explains), connects this process as its driver and runs a built-in scenario twice with
the bus embedded in the driver (so it cannot be on the removed node): once undisturbed,
once with the worker node that holds the first agent host removed (``Cluster.remove_node``)
before the middle tick. Hosts on the lost node are restarted by Ray on the nodes left;
the runner replays their step and commit. Prints one JSON line with both runs' summaries,
whether every row is equal, the restarts seen and the seconds each run took; exits
non-zero if the disturbed run differs from the undisturbed one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from hivemem.platform.runner import RunResult, run_once
from hivemem.platform.scenario import load_scenario

FULL = {"ticks": 40, "workers": 4, "hosts": 6, "scenario": "relay_qa"}
QUICK = {"ticks": 12, "workers": 3, "hosts": 3, "scenario": "relay_qa"}
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
PHASES = ("before_tick", "before_commit")
"""When the node goes: between ticks, or between the hosts' step and their commit."""


def _overrides(ticks: int) -> list[str]:
    return [f"run.ticks={ticks}", "agents.0.count=3", "agents.1.count=6"]


def start_cluster(workers: int) -> Any:
    """A head (the driver and the bus live there) and ``workers`` one-CPU nodes.

    The head checks its nodes' health every second and declares a node dead after three
    missed checks (Ray's defaults: 3 s and 5), so a killed node is noticed in seconds.
    """
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": HEALTH_CHECKS,
        },
    )
    for _ in range(workers):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()  # hosts are spread by a placement group (agents/host.py)
    return cluster


class NodeRemover:
    """A hook that removes, at tick ``at``, a worker node holding an agent host.

    As a ``before_tick`` hook it removes the node between ticks; as ``before_commit``,
    between the hosts' step and their commit, so the hosts on it die holding the writes
    they kept. At the last tick it notes where the hosts run then.
    """

    def __init__(self, cluster: Any, at: int, last: int, graceful: bool) -> None:
        self.cluster, self.at, self.last, self.graceful = cluster, at, last, graceful
        self.removed_node = ""
        self.moved_hosts = 0
        self.seconds = 0.0
        self.nodes_after: list[str] = []

    def __call__(self, t: int, pool: Any) -> None:
        import ray

        if t == self.last:
            self.nodes_after = [i["node"] for i in ray.get([h.info.remote() for h in pool.handles])]
        if t != self.at:
            return
        used = [info["node"] for info in ray.get([h.info.remote() for h in pool.handles])]
        victim = next((n for n in self.cluster.worker_nodes if n.node_id in used), None)
        if victim is None:
            raise RuntimeError("no agent host runs on a worker node")
        started = time.perf_counter()
        self.cluster.remove_node(victim, allow_graceful=self.graceful)
        _wait_until_dead(victim.node_id)
        self.seconds = time.perf_counter() - started
        self.removed_node = victim.node_id
        self.moved_hosts = used.count(victim.node_id)

    def figures(self) -> dict[str, Any]:
        return {
            "removed_at_tick": self.at,
            "hosts_on_removed_node": self.moved_hosts,
            "hosts_left_on_removed_node": self.nodes_after.count(self.removed_node),
            "seconds_until_reported_dead": round(self.seconds, 2),
        }


def _wait_until_dead(node_id: str, timeout: float = 120.0) -> None:
    """Until the cluster reports the node dead (the run goes on from there)."""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"node {node_id} still alive {timeout} s after its removal")


def disturbed(
    s: Any, cluster: Any, hosts: int, phase: str, graceful: bool
) -> tuple[RunResult, dict[str, Any]]:
    """One run with a worker node removed at the middle tick, in ``phase``."""
    remover = NodeRemover(cluster, s.run.ticks // 2, s.run.ticks - 1, graceful)
    started = time.perf_counter()
    result = run_once(s, hosts=hosts, hooks={phase: remover})
    figures = remover.figures()
    figures["seconds"] = round(time.perf_counter() - started, 2)
    figures["host_restarts"] = result.timing["host_restarts"]
    if not remover.removed_node:
        raise RuntimeError("the node was never removed")
    return result, figures


def measure(
    ticks: int, workers: int, hosts: int, scenario: str, graceful: bool = False
) -> dict[str, Any]:
    """An undisturbed run, then one per phase with a node removed, on one cluster."""
    cluster = start_cluster(workers)
    try:
        s = load_scenario(scenario, _overrides(ticks))
        started = time.perf_counter()
        clean = run_once(s, hosts=hosts)
        out: dict[str, Any] = {
            "scenario": scenario,
            "ticks": ticks,
            "nodes": workers + 1,
            "hosts": hosts,
            "graceful": graceful,
            "clean": {
                "seconds": round(time.perf_counter() - started, 2),
                "nodes_used": len(set(clean.host_nodes)),
                "summary": clean.summary,
            },
        }
        for phase in PHASES:
            result, figures = disturbed(s, cluster, hosts, phase, graceful)
            figures["same_summary"] = result.summary == clean.summary
            figures["same_rows"] = _rows(result) == _rows(clean)
            out[phase] = figures
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return out


def _rows(result: RunResult) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(r, sort_keys=True)) for r in result.rows]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the CI size")
    parser.add_argument("--ticks", type=int)
    parser.add_argument("--workers", type=int, help="worker nodes besides the head")
    parser.add_argument("--hosts", type=int)
    parser.add_argument("--scenario")
    parser.add_argument(
        "--graceful",
        action="store_true",
        help="let the node's raylet unregister (default: killed at once, as in a crash)",
    )
    args = parser.parse_args()
    size = dict(QUICK if args.quick else FULL)
    for key in size:
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    figures = measure(**size, graceful=args.graceful)  # type: ignore[arg-type]
    print(json.dumps(figures, sort_keys=True))
    same = all(figures[p]["same_summary"] and figures[p]["same_rows"] for p in PHASES)
    moved = all(figures[p]["hosts_left_on_removed_node"] == 0 for p in PHASES)
    return 0 if same and moved else 1


if __name__ == "__main__":
    sys.exit(main())
