"""A 3-node Ray cluster (``ray.cluster_utils.Cluster``, all on this machine) runs a scenario
through the CLI with ``--address``: the bus is three named shard actors there
(``run.bus_shards=3``), one per node, hosts spread over the nodes, and the results equal those of the
embedded single-node run on one unsharded bus."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivemem.platform.runner import run_once
from hivemem.platform.scenario import load_scenario

OVERRIDES = ["run.ticks=10", "agents.0.count=3", "agents.1.count=6"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from ray.cluster_utils import Cluster

    # The nodes use this machine's own interface address (Ray's default): a cluster_utils
    # node pinned to 127.0.0.1 leaves drivers unable to reach its pubsub. Nothing here
    # leaves the machine.
    node = {"num_cpus": 1}
    c = Cluster(
        initialize_head=True, connect=False, head_node_args={**node, "include_dashboard": False}
    )
    for _ in range(2):
        c.add_node(**node)
    c.wait_for_nodes()  # hosts are spread by a placement group (agents/host.py)
    yield c.address
    c.shutdown()


@pytest.mark.usefixtures("ray_session")
def test_three_node_cluster_gives_the_single_node_results(cluster: str, tmp_path: Path) -> None:
    args = [a for o in [*OVERRIDES, "run.bus_shards=3"] for a in ("--set", o)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hivemem.platform.cli",
            "run",
            "relay_qa",
            "--address",
            cluster,
            "--hosts",
            "3",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-baseline",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["hosts"] == 3
    assert summary["nodes"] >= 2, f"hosts were not spread over the cluster's nodes: {summary}"
    assert summary["bus_nodes"] == 3, f"bus shards were not spread over the nodes: {summary}"
    rows = [json.loads(line) for line in (folder / "ticks.jsonl").read_text().splitlines()]

    local = run_once(load_scenario("relay_qa", OVERRIDES), hosts=1)
    assert summary["summary"] == local.summary
    assert rows == [json.loads(json.dumps(r)) for r in local.rows]


HALF_STARTED = """
import json, sys, ray
from hivemem.platform import runner
from hivemem.platform.scenario import load_scenario

def unwritable(*args):
    raise PermissionError("[Errno 13] Permission denied: '/tmp/hivemem/prom_bus_targets'")

runner.write_bus_targets = unwritable
ray.init(address=sys.argv[1])
s = load_scenario("relay_qa", ["run.ticks=2", "run.hosts=1", "run.bus_shards=2"])
try:
    runner.run_once(s, remote=True)
except PermissionError:
    pass
states = [g["state"] for g in ray.util.placement_group_table().values()]
print(json.dumps(states))
"""


@pytest.mark.usefixtures("ray_session")
def test_a_bus_that_fails_to_start_halfway_leaves_no_placement_group(cluster: str) -> None:
    """The shards started, then writing the Prometheus targets failed (a /tmp/hivemem
    another user owns, on a shared head node): nothing stopped the shards, and their
    placement group stayed for as long as the driver lived (RL training, notebooks)."""
    proc = subprocess.run(
        [sys.executable, "-c", HALF_STARTED, cluster],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = json.loads(proc.stdout.strip().splitlines()[-1])
    assert states and "CREATED" not in states, states
