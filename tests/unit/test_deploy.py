"""deploy/ files agree with the code: the Prometheus config scrapes the ports the README
tells users to pass, on loopback only."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_prometheus_scrapes_the_ports_the_deploy_readme_uses() -> None:
    config = yaml.safe_load((ROOT / "deploy/observability/prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert set(targets) == {"hivemem-driver", "hivemem-bus"}
    readme = (ROOT / "deploy/README.md").read_text()
    run_port = re.search(r"hivemem run .*--metrics-port (\d+)", readme)
    bus_port = re.search(r"hivemem bus serve .*--metrics-port (\d+)", readme)
    assert run_port and bus_port
    assert targets["hivemem-driver"] == [f"127.0.0.1:{run_port.group(1)}"]
    assert targets["hivemem-bus"] == [f"127.0.0.1:{bus_port.group(1)}"]
