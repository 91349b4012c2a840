"""``HivememBusDown`` in a real Prometheus loaded with ``deploy/observability/prometheus.yml``
as the README runs it (a run alone, no standalone bus): it fires for a bus target that
the runner listed and that does not answer, and for nothing else.

Only what the test cannot wait for is changed: 1 s intervals, the alert's ``for`` cut to
1 s, and the discovery files in a temporary folder (the runner's own folder may hold
other runs' files). Ray and a run are not needed: the runner's target file names a
closed port, as a bus actor that is gone leaves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, free_port

OBSERVABILITY = ROOT / "deploy/observability"


def fast_config(tmp: Path) -> tuple[Path, Path]:
    """The deploy config and rules with 1 s timings and a temporary targets folder;
    returns the config's path and the bus targets folder."""
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        if "for" in rule:
            rule["for"] = "1s"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(tmp / "alerts.yml")]
    targets = tmp / "bus_targets"
    targets.mkdir()
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            # the bus job's files here; Ray's discovery file absent (no Ray node)
            folder = targets if job["job_name"] == "hivemem-bus" else tmp / "absent"
            sd["files"] = [str(folder / Path(f).name) for f in sd["files"]]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    return tmp / "prometheus.yml", targets


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is missing: run `make prometheus` (apt-get install prometheus)")
    config, targets = fast_config(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", targets
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def api(base: str, path: str) -> Any:
    try:
        body = json.loads(urllib.request.urlopen(f"{base}/api/v1/{path}", timeout=10).read())
    except (urllib.error.URLError, ConnectionError):
        return None  # not up yet
    return body["data"]


def firing(base: str) -> set[str]:
    data = api(base, "alerts") or {"alerts": []}
    return {
        a["labels"]["instance"]
        for a in data["alerts"]
        if a["labels"]["alertname"] == "HivememBusDown" and a["state"] == "firing"
    }


def test_bus_down_fires_for_a_discovered_bus_only(prometheus: tuple[str, Path]) -> None:
    base, targets = prometheus
    gone = f"127.0.0.1:{free_port()}"  # nothing listens there
    # what write_bus_targets writes for a run's bus actors
    (targets / "run1.json").write_text(
        json.dumps([{"targets": [gone], "labels": {"scenario": "relay_qa"}}])
    )
    deadline = time.monotonic() + 60
    while gone not in firing(base):
        assert time.monotonic() < deadline, "HivememBusDown never fired for a discovered bus"
        time.sleep(0.5)
    data = api(base, "targets")
    alerted = {
        t["labels"]["instance"]
        for t in data["activeTargets"]
        if t["labels"]["job"] == "hivemem-bus"
    }
    # the README's run without a standalone bus: no other target under the alerted job
    assert alerted == {gone}
    assert firing(base) == {gone}
