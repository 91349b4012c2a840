"""What a run leaves behind: its folder of outputs, and the confidence intervals its reports
print (``hivemem run``, ``hivemem compare``, ``hivemem rl evaluate``)."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

from hivemem.platform.runner import RunResult
from hivemem.platform.scenario import Scenario, dump_resolved


def write_outputs(
    scenario: Scenario, result: RunResult, out_dir: Path, baseline: RunResult | None, plots: bool
) -> Path:
    """The run folder: resolved scenario, per-tick JSONL, summary JSON and PNG plots."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = out_dir / f"{scenario.name}-s{scenario.run.seed}-{stamp}-{uuid.uuid4().hex[:4]}"
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "scenario.yaml").write_text(dump_resolved(scenario), encoding="utf-8")
    with (folder / "ticks.jsonl").open("w", encoding="utf-8") as fh:
        for row in result.rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    summary = result.to_json()
    if baseline is not None:
        summary["baseline"] = baseline.summary
    (folder / "summary.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8"
    )
    if plots:
        from hivemem.platform.plots import run_plots

        run_plots(folder, result, baseline)
    return folder


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student t)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    from scipy import stats

    return mean, float(stats.t.ppf(0.975, n - 1) * math.sqrt(var / n))
