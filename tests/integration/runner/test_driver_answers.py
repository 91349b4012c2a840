"""The correct answers and questions a run's driver exports are the ones its task's
headline score counts, and the dashboard's "correct answers" panel, evaluated by
promtool on those counters, shows that score (never above 1).

evolving_facts counts a subset of its as-of questions twice in its parts
(``*_as_of_changed``) and team_insights splits its parts by episode: summing parts by
name overstated the first (above 1 per recall) and made a label value per episode.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from hivemem.platform.metrics import DriverMetrics
from hivemem.platform.runner import RunResult, run_once
from hivemem.platform.scenario import load_scenario
from prometheus_client.parser import text_string_to_metric_families

from .test_driver_metrics import free_port

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy/observability/grafana/dashboards/hivemem.json"
RUNS = {
    "evolving_facts": ["run.ticks=30"],
    # several episodes, newcomers in the second half
    "team_insights": ["run.ticks=12", "task.params.episode_ticks=2"],
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exported_run(name: str) -> tuple[Samples, RunResult]:
    """Run ``name`` with a driver serving /metrics; its final samples and result."""
    metrics = DriverMetrics()
    port = free_port()
    metrics.serve(port)
    result = run_once(load_scenario(name, RUNS[name]), metrics=metrics)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    return samples, result


def totals(result: RunResult) -> dict[str, float]:
    """The run's summed score parts, from its rows."""
    skip = {"t", "score", "ops", "evicted", "items", "recalls", "hits", "writes", "promotions"}
    out: dict[str, float] = {}
    for row in result.rows:
        for k, v in row.items():
            if k not in skip:
                out[k] = out.get(k, 0.0) + v
    return out


def correct_panel() -> dict[str, str]:
    """The "correct answers" panel's queries, by legend."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    (panel,) = [p for p in panels if p["title"].lower().startswith("correct answers per")]
    return {t["legendFormat"]: t["expr"] for t in panel["targets"]}


def promtool_value(expr: str, samples: Samples) -> float:
    """``expr`` evaluated by ``promtool test rules`` at 10m on the driver's counters, each
    grown linearly from 0 over 10 minutes to its final value (so a rate ratio there is
    the totals' ratio); fails unless promtool finds exactly the value it is told to
    expect, which is read back from its failure message first."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `make prometheus` (apt-get install prometheus)")
    series = [
        {
            "series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}",
            "values": f"0+{value / 10!r}x10",
        }
        for (name, labels), value in samples.items()
        if name.startswith("hivemem_driver_") and name.endswith("_total")
    ]
    case = {"interval": "1m", "input_series": series}
    case["promql_expr_test"] = [{"expr": expr, "eval_time": "10m", "exp_samples": []}]
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [case]}
    got = subprocess.run(
        [exe, "test", "rules", "/dev/stdin"],
        input=yaml.safe_dump(test),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # expected nothing: promtool prints what it got
    lines = [line for line in (got.stdout + got.stderr).splitlines() if "got:" in line]
    assert len(lines) == 1, got.stdout + got.stderr
    return float(lines[0].rsplit(" ", 1)[1])


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_exported_answers_are_the_tasks_score(name: str) -> None:
    samples, result = exported_run(name)
    label = (("scenario", name),)
    correct = samples[("hivemem_driver_correct_total", label)]
    questions = samples[("hivemem_driver_questions_total", label)]
    recalls = samples[("hivemem_driver_recalls_total", label)]
    assert questions > 0
    assert correct / questions == pytest.approx(result.summary["score"])
    parts = totals(result)
    if name == "evolving_facts":  # the changed as-of questions are among the as-of ones
        assert questions == parts["asked_current"] + parts["asked_as_of"]
        assert correct == parts["correct_current"] + parts["correct_as_of"]
    else:
        assert questions == sum(v for k, v in parts.items() if k.startswith("attempts_ep"))
        assert correct == sum(v for k, v in parts.items() if k.startswith("successes_ep"))
    # kinds come from a fixed set, whatever the number of episodes
    kinds = {dict(labels)["kind"] for (n, labels) in samples if n.endswith("task_outcomes_total")}
    assert not any("_ep" in k for k in kinds), kinds
    if name == "team_insights":
        assert kinds == {"attempts", "successes", "newcomer_attempts", "newcomer_successes"}
        outcomes = {k: samples[("hivemem_driver_task_outcomes_total", (("kind", k), *label))]
                    for k in kinds}  # fmt: skip
        assert (outcomes["successes"], outcomes["attempts"]) == (correct, questions)
    # the dashboard's panel, evaluated by promtool on these counters
    queries = correct_panel()
    per_question = promtool_value(queries["per question {{scenario}}"], samples)
    assert per_question == pytest.approx(result.summary["score"]) and per_question <= 1
    per_recall = promtool_value(queries["per recall {{scenario}}"], samples)
    assert per_recall == pytest.approx(correct / recalls) and per_recall <= 1
