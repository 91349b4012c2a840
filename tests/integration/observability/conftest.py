"""A real Ray cluster (``ray start --head``) and real Prometheus tools for the observability tests.

The cluster is started with the commands of README.md's "Run on a cluster", run by bash
as written (a fresh ``HOME``, the venv not active until the README activates it), with
only flags added: a temporary folder, and every port chosen free and on loopback, as
other Ray sessions may run on this machine with Ray's default ports. It is stopped by
its process group (never ``ray stop``, which would stop every Ray on the machine).

The fixtures are package-scoped (this folder has an ``__init__.py`` for that): the
cluster, the run and the bus go away when this folder's tests end, not at the end of
the whole suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hivemem.memory_bus.auth import token_for
from hivemem.memory_bus.client import MemoryClient
from hivemem.memory_bus.errors import AccessDeniedError
from hivemem.memory_bus.item import NewItem
from hivemem.memory_bus.protocol import ADMIN_AGENT
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.runner import RunResult, run_once
from hivemem.platform.scenario import load_scenario
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]
TICKS, AGENTS, HOSTS = 30, 4, 2
"""The size of the run submitted to the cluster."""
BIN = Path(sys.executable).parent
README = ROOT / "README.md"
GRAFANA = ROOT / "deploy/observability/grafana"
DASHBOARD = GRAFANA / "dashboards/hivemem.json"


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows left out."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def readme_cluster_commands() -> list[str]:
    """The commands of README.md's "Run on a cluster" block, in order: continuation lines
    joined, comments dropped."""
    section = README.read_text(encoding="utf-8").split("## Run on a cluster", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines())
    return [" ".join(line.split()) for line in lines if line]


def readme_command(starts: str) -> str:
    """The README's cluster command that starts with ``starts``."""
    (found,) = [c for c in readme_cluster_commands() if _bare(c).startswith(starts)]
    return found


def _bare(command: str) -> str:
    """``command`` without a ``.venv/bin/`` before its program."""
    return command.removeprefix(".venv/bin/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's ``promtool`` (installed by ``make test``)."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `make prometheus` (apt-get install prometheus)")
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def scrape(url: str) -> str:
    return urllib.request.urlopen(url, timeout=10).read().decode()


@dataclass
class RayHead:
    """A running ``ray start --head`` cluster."""

    temp_dir: Path
    dashboard: str
    """Ray Jobs address (``http://127.0.0.1:port``)."""
    metrics_port: int
    """The node's metrics export port (Ray's and ``ray.util.metrics`` series)."""
    gcs: str
    """The address ``ray.init`` joins (``127.0.0.1:port``)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment for CLI calls against this cluster (token auth)."""
    pgid: int = 0

    @property
    def service_discovery(self) -> Path:
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def stop(self) -> None:
        """Stop every process of the cluster: they share the process group of ray start."""
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


def _start_head(temp_dir: Path) -> RayHead:
    ports = {
        name: free_port()
        for name in (
            "port",
            "dashboard-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "ray-client-server-port",
            "runtime-env-agent-port",
            "node-manager-port",
            "object-manager-port",
        )
    }
    home = temp_dir / "home"  # no token yet: the README's commands must make one
    home.mkdir()
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "HOME": str(home),
        # the dashboard's and the autoscaler's own metrics servers have fixed default ports
        "DASHBOARD_METRIC_PORT": str(free_port()),
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "RAY_metrics_report_interval_ms": "500",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A head with its dashboard makes a multiprocessing folder (pymp-*) in the
        # temporary folder and leaves it, even after `ray stop`: here it goes with the rest.
        "TMPDIR": str(temp_dir),
        # jobs' entrypoints run with the PATH `ray start` had: the README must activate
        # the venv for `hivemem` to be found, so it is not on this PATH
        "PATH": os.pathsep.join(path),
    }
    env.pop("VIRTUAL_ENV", None)
    env.pop("VIRTUAL_ENV_PROMPT", None)
    # the README's commands up to the head's start, in their order (pip: installed already)
    commands = readme_cluster_commands()
    head = readme_command("ray start --head")
    setup = [c for c in commands[: commands.index(head)] if "pip install" not in c]
    extra = [
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        *(f"--{name}={port}" for name, port in ports.items() if name != "metrics-export-port"),
        f"--metrics-export-port {ports['metrics-export-port']}",
    ]
    head = head.replace("--num-cpus 8", "--num-cpus 2")
    # the last --metrics-export-port counts: this one, not the README's 8080
    script = "\n".join(["set -e", *setup, " ".join([head, *extra])])
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the cluster's daemons keep this process group
    )
    head = RayHead(
        temp_dir=temp_dir,
        dashboard=f"http://127.0.0.1:{ports['dashboard-port']}",
        metrics_port=ports["metrics-export-port"],
        gcs=f"127.0.0.1:{ports['port']}",
        # what the README's shell has once it started the head
        env={
            **env,
            "RAY_AUTH_MODE": "token",
            "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
            "VIRTUAL_ENV": str(BIN.parent),
        },
        pgid=proc.pid,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out"
    if proc.returncode != 0:
        head.stop()
        pytest.fail(f"ray start failed:\n{stdout}\n{stderr}")
    return head


def host_series(ray_head: RayHead, want: int) -> dict[tuple[str, tuple[Any, ...]], float]:
    """The node's ``ray_hivemem_host_*`` samples, once agent-steps reach ``want``."""
    url = f"http://127.0.0.1:{ray_head.metrics_port}/metrics"
    deadline = time.monotonic() + 30
    samples: dict[tuple[str, tuple[Any, ...]], float] = {}
    while time.monotonic() < deadline:
        samples = {}
        for family in text_string_to_metric_families(scrape(url)):
            for s in family.samples:
                if s.name.startswith("ray_hivemem_host_"):
                    key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items())))
                    samples[key] = samples.get(key, 0.0) + s.value
        steps = sum(v for (n, _), v in samples.items() if n == "ray_hivemem_host_agent_steps_total")
        if steps >= want:
            return samples
        time.sleep(0.5)
    return samples


@pytest.fixture(scope="package")
def ray_head() -> Iterator[RayHead]:
    # A short path: Ray's unix sockets live under it and have a length limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="hmray", dir="/tmp"))
    head = _start_head(temp_dir)
    try:
        yield head
    finally:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def ray_job(ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run submitted with the README's ``ray job submit`` (its address made this
    cluster's), finished; a smaller run than the README's, into a temporary folder."""
    out = tmp_path_factory.mktemp("runs")
    submit = readme_command("ray job submit").split(" -- ", 1)[0]
    submit = submit.replace("http://127.0.0.1:8265", ray_head.dashboard)
    cmd = [
        *submit.split(),
        "--",
        "hivemem",
        "run",
        "capacity_stream",
        "--ticks",
        str(TICKS),
        "--hosts",
        str(HOSTS),
        "--set",
        f"agents.0.count={AGENTS}",
        "--no-baseline",
        "--no-progress",
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=ray_head.env, capture_output=True, text=True, timeout=240, check=False
    )
    return {"proc": proc, "out": out}


@pytest.fixture(scope="package")
def driver_run(ray_session: None) -> Iterator[tuple[int, RunResult]]:
    """A finished run whose driver keeps serving /metrics (as ``hivemem run`` does)."""
    s = load_scenario("capacity_stream", ["run.ticks=25", "agents.0.count=3"])
    metrics = DriverMetrics()
    port = free_port()
    metrics.serve(port)
    yield port, run_once(s, metrics=metrics)


@dataclass
class StandaloneBus:
    """A running ``hivemem bus serve``."""

    address: str
    metrics_port: int
    secret: bytes

    def client(self, agent: str, groups: list[str]) -> MemoryClient:
        """A client of a newly registered ``agent`` of ``groups``."""
        admin = MemoryClient(
            self.address, ADMIN_AGENT, token_for(self.secret, ADMIN_AGENT), timeout=30
        )
        try:
            token = admin.register(agent, groups)["token"]
        finally:
            admin.close()
        return MemoryClient(self.address, agent, token, timeout=30)


@pytest.fixture(scope="package")
def standalone_bus(standalone_bus_server: StandaloneBus) -> int:
    """The metrics port of :func:`standalone_bus_server`."""
    return standalone_bus_server.metrics_port


@pytest.fixture(scope="package")
def standalone_bus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneBus]:
    """``hivemem bus serve`` with three writes and a refused one behind it."""
    tmp = tmp_path_factory.mktemp("bus")
    port, metrics_port = free_port(), free_port()
    secret_file = tmp / "secret"
    proc = subprocess.Popen(
        [
            *(str(BIN / "hivemem"), "bus", "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--pub-port", "0"),
            *("--metrics-port", str(metrics_port), "--secret-file", str(secret_file)),
            *("--data-dir", str(tmp / "data")),  # a standalone bus keeps its memory
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = f"tcp://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not secret_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        bus = StandaloneBus(address, metrics_port, secret_file.read_bytes())
        writer = bus.client("writer", ["team"])
        for i in range(3):
            writer.write("shared", "team", NewItem(f"fact {i}"), now=float(i))
        with pytest.raises(AccessDeniedError):  # the errors panel has a series to show
            writer.write("shared", "another-team", NewItem("not ours"), now=3.0)
        writer.close()
        # the gauges refresh once a second: settled before anyone scrapes
        deadline = time.monotonic() + 15
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        while 'hivemem_bus_items{tier="shared"} 3.0' not in scrape(url):
            assert time.monotonic() < deadline, "the bus's gauges never showed its writes"
            time.sleep(0.2)
        yield bus
    finally:
        proc.terminate()
        proc.wait(timeout=30)


CONFIG = ROOT / "deploy/observability/prometheus.yml"


@pytest.fixture(scope="package")
def prometheus(
    driver_run: tuple[int, RunResult],
    standalone_bus: int,
    ray_head: RayHead,
    ray_job: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Prometheus on a free loopback port, with the deploy config's jobs pointed here."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is missing: run `make prometheus` (apt-get install prometheus)")
    assert ray_job["proc"].returncode == 0, ray_job["proc"].stderr[-2000:]
    host_series(ray_head, TICKS * AGENTS)  # the node has the whole run's counts
    tmp = tmp_path_factory.mktemp("prometheus")
    config = scrape_config(driver_run[0], standalone_bus, ray_head.service_discovery)
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def scrape_config(driver_port: int, bus_port: int, service_discovery: Path) -> dict[str, Any]:
    """deploy/observability/prometheus.yml with this test's ports, a 1 s interval, its
    alert rules where they are, and the Ray node scraped on loopback."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(CONFIG.parent / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["hivemem-driver"]["static_configs"] = [{"targets": [f"127.0.0.1:{driver_port}"]}]
    jobs["hivemem-bus"]["static_configs"] = [{"targets": [f"127.0.0.1:{bus_port}"]}]
    jobs["ray"]["file_sd_configs"] = [{"files": [str(service_discovery)]}]
    # Ray lists the node under the machine's own network address, even with
    # --node-ip-address=127.0.0.1; the tests stay on loopback (its port is the same)
    loopback = {"source_labels": ["__address__"], "regex": r".*:(\d+)"}
    loopback |= {"target_label": "__address__", "replacement": "127.0.0.1:$1"}
    jobs["ray"]["relabel_configs"] = [loopback]
    return config


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    except (urllib.error.URLError, ConnectionError):
        return []  # not up yet
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def series(base: str, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The series of ``expr``, waiting until Prometheus has some."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(base, expr)
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"no series for {expr} after {timeout} s")
        time.sleep(0.5)


def panel_queries(title: str) -> dict[str, str]:
    """The queries of the panel called ``title``, by legend."""
    (panel,) = [p for p in panels() if p["title"] == title]
    return {t["legendFormat"]: t["expr"] for t in panel["targets"]}
