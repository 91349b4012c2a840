"""deploy/ files agree with the code and pass their tools' own checks: promtool on the
Prometheus config, Ray's validation on the cluster-launcher YAML, and the fields that
matter in the KubeRay manifests and the Dockerfile."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from hivemem.platform.cli import app
from hivemem.platform.runner import BUS_TARGETS_DIR

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RAY_SD = "/tmp/ray/prom_metrics_service_discovery.json"


def load(path: str) -> Any:
    return yaml.safe_load((DEPLOY / path).read_text())


def ray_pin() -> str:
    match = re.search(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert match
    return match.group(1)


BUS_SD = "/tmp/hivemem/prom_bus_targets/*.json"


def test_prometheus_scrapes_the_ports_the_deploy_readme_uses() -> None:
    config = load("observability/prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"hivemem-driver", "hivemem-bus", "ray"}
    readme = (DEPLOY / "README.md").read_text()
    run_port = re.search(r"hivemem run .*--metrics-port (\d+)", readme)
    bus_port = re.search(r"hivemem bus serve .*--metrics-port (\d+)", readme)
    assert run_port and bus_port
    targets = {
        name: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for name, job in jobs.items()
    }
    assert targets["hivemem-driver"] == [f"127.0.0.1:{run_port.group(1)}"]
    # the standalone bus only as a commented-out example: under the job HivememBusDown
    # watches, a target nobody runs would keep that critical alert firing
    assert targets["hivemem-bus"] == []
    text = (DEPLOY / "observability/prometheus.yml").read_text()
    assert f'#   - targets: ["127.0.0.1:{bus_port.group(1)}"]' in text
    # Ray's nodes come from the file Ray's head keeps current
    assert jobs["ray"]["file_sd_configs"] == [{"files": [RAY_SD]}]
    # bus actors of cluster runs come from the files the runner writes
    assert jobs["hivemem-bus"]["file_sd_configs"] == [{"files": [BUS_SD]}]
    assert str(BUS_TARGETS_DIR / "*.json") == BUS_SD


def block_commands(text: str, heading: str) -> list[str]:
    """The commands of the first bash block after ``heading``, in order: continuation
    lines joined, comments dropped, up to the block's first blank line."""
    section = text.split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].split("\n\n", 1)[0]
    lines = (
        re.sub(r"(^|\s+)#.*$", "", line).strip() for line in block.replace("\\\n", " ").splitlines()
    )
    return [" ".join(line.split()) for line in lines if line]


def test_the_deploy_readme_starts_a_cluster_as_the_tested_readme_does() -> None:
    """Its own copy lacked the venv's activation (the job's ``hivemem`` was not found)
    and the token made before ``ray start``; the README's commands are the ones
    tests/integration/observability runs on a real cluster."""
    readme = block_commands((ROOT / "README.md").read_text(), "## Run on a cluster")
    deploy = block_commands((DEPLOY / "README.md").read_text(), "## Run on a cluster")
    assert deploy == [c for c in readme if "pip install" not in c]
    assert deploy[0] == ". .venv/bin/activate"


def test_promtool_accepts_the_prometheus_config() -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `make prometheus` (apt-get install prometheus)")
    path = DEPLOY / "observability/prometheus.yml"
    result = subprocess.run(
        [exe, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = (result.stdout + result.stderr).splitlines()
    problems = [
        line
        for line in output
        if ("WARNING" in line or "FAILED" in line)
        # without a Ray head (or a cluster run) here the discovery files do not exist yet
        and not (
            any(f'file "{sd}"' in line for sd in (RAY_SD, BUS_SD)) and "does not exist" in line
        )
    ]
    assert not problems, output


def test_the_ray_cluster_launcher_yaml_passes_rays_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("ray/cluster.yaml")
    validate_config(prepare_config(config))  # raises on anything Ray would refuse
    assert config["docker"]["image"] == k8s_image()
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert sum("--metrics-export-port=8080" in cmd for cmd in starts) == 2
    # token auth on every node (Ray 2.60 leaves a launched cluster open), the token of
    # the machine that ran `ray up`, the dashboard on the head's loopback (SSH reaches it)
    ray_starts = [cmd for cmd in starts if "ray start" in cmd]
    assert len(ray_starts) == 2
    assert all("export RAY_AUTH_MODE=token;" in cmd.split("ray start")[0] for cmd in ray_starts), (
        ray_starts
    )
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    assert not any("dashboard-host" in cmd for cmd in starts), starts
    broken = dict(config, head_node_type="nope")
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


def cluster_specs() -> list[dict[str, Any]]:
    """The RayCluster's spec and the RayJob's rayClusterSpec."""
    cluster, job = load("k8s/raycluster.yaml"), load("k8s/rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    return [cluster["spec"], job["spec"]["rayClusterSpec"]]


def containers(spec: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(rayStartParams, container) of the head and every worker group."""
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [(g["rayStartParams"], c) for g in groups for c in g["template"]["spec"]["containers"]]


def k8s_image() -> str:
    images = {c["image"] for spec in cluster_specs() for _, c in containers(spec)}
    assert len(images) == 1, images
    return images.pop()


def test_kuberay_manifests_run_the_hivemem_image_with_matching_resources() -> None:
    specs = cluster_specs()
    assert specs[0] == specs[1]  # the RayJob's cluster is the RayCluster
    for spec in specs:
        assert spec["rayVersion"] == ray_pin()
        assert spec["authOptions"] == {"mode": "token"}  # open to the cluster's network otherwise
        for params, container in containers(spec):
            res = container["resources"]
            assert res["requests"] == res["limits"]
            assert params["num-cpus"] == res["limits"]["cpu"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == int(params["metrics-export-port"]) == 8080
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in head["ports"]}
        assert ports["dashboard"] == 8265 and ports["hivemem-metrics"] == 9100
    assert k8s_image().startswith("ghcr.io/hivemem/hivemem:")


def test_the_rayjob_entrypoint_is_a_valid_hivemem_run_of_a_builtin_scenario() -> None:
    job = load("k8s/rayjob.yaml")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["hivemem", "run"]
    builtins = {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
    assert argv[2] in builtins
    # the CLI's own parser accepts every option
    command = typer.main.get_command(app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    ctx = run.make_context("run", argv[2:])
    assert ctx.params["metrics_port"] == 9100
    assert ctx.params["metrics_host"] == "0.0.0.0"  # Prometheus scrapes it from outside the pod
    assert job["shutdownAfterJobFinishes"] is True


def test_the_dockerfile_builds_on_rays_image_of_the_pinned_version() -> None:
    text = (DEPLOY / "docker/Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)$", text, re.M)
    assert base and base.group(1) == f"rayproject/ray:{ray_pin()}-py311-cpu"
    assert "-c constraints.txt '.[cluster]'" in text
    for folder in ("platform", "agents", "memory_bus", "scenarios"):
        assert f"COPY --chown=ray:users {folder} ./{folder}" in text
    assert re.search(r"^EXPOSE .*\b9100\b.*\b8080\b", text, re.M)


def test_the_alert_rules_load_and_do_what_their_promtool_tests_say() -> None:
    """promtool's own unit tests of the rules (alerts_test.yml: each alert fires on
    synthetic series, and stays quiet where it must), and the rules wired into the config
    and the compose file."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `make prometheus` (apt-get install prometheus)")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY / "observability"
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert load("observability/prometheus.yml")["rule_files"] == ["alerts.yml"]
    prometheus = load("observability/compose.yaml")["services"]["prometheus"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    tested = {t["alertname"] for case in load("observability/alerts_test.yml")["tests"]
              for t in case["alert_rule_test"]}  # fmt: skip
    rules = {r["alert"] for g in load("observability/alerts.yml")["groups"] for r in g["rules"]}
    assert tested == rules  # every alert has its test
