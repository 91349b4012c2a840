"""Every exposition passes ``promtool check metrics``, uses only the fixed label set, and
the Grafana dashboard asks only for series that the code really exports.

The exported names come from live endpoints: a run's driver (with its embedded bus), a
standalone bus, and the Ray node that hosted a submitted run's agent hosts.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from hivemem.agents.metrics import HostMetrics
from hivemem.platform.runner import RunResult
from prometheus_client.parser import text_string_to_metric_families

from .conftest import DASHBOARD, GRAFANA, ROOT, RayHead, panels, promtool, scrape

LABELS = {"tier", "op", "policy", "scenario", "code", "kind", "decision", "generation"}
"""The only labels hivemem puts on its series (``le`` is the histograms' own)."""


def samples(text: str) -> dict[str, set[str]]:
    """Sample name -> the label names it carries."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def kinds(text: str) -> dict[str, str]:
    """Sample name -> the type of its family (counter, gauge, histogram)."""
    return {s.name: f.type for f in text_string_to_metric_families(text) for s in f.samples}


def check_exposition(text: str, prefix: str) -> None:
    found = samples(text)
    assert found and all(name.startswith(prefix) for name in found), sorted(found)
    for name, labels in found.items():
        assert labels - {"le"} <= LABELS, (name, labels)
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stderr
    assert not (result.stdout + result.stderr).strip(), result


def test_the_driver_exposition_passes_promtool(driver_run: tuple[int, RunResult]) -> None:
    text = scrape(f"http://127.0.0.1:{driver_run[0]}/metrics")
    assert "hivemem_bus_write_decisions_total" in text  # the embedded bus is in it
    check_exposition(text, "hivemem_")


def test_the_standalone_bus_exposition_passes_promtool(standalone_bus: int) -> None:
    text = scrape(f"http://127.0.0.1:{standalone_bus}/metrics")
    check_exposition(text, "hivemem_bus_")


def declared_host_series() -> set[str]:
    """The series Ray exports for :class:`HostMetrics` (``ray_`` + name + suffixes).

    Ray exports a counter only once it has counted something, so a run without a host
    restart has no ``ray_hivemem_host_restarts_total``: the names come from the code's
    own metric objects, and the node's exposition is checked against them.
    """
    from ray.util import metrics as m

    names: set[str] = set()
    for metric in vars(HostMetrics()).values():
        base = f"ray_{metric._name}"
        if isinstance(metric, m.Counter):
            names.add(f"{base}_total")
        elif isinstance(metric, m.Histogram):
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
        else:
            names.add(base)
    return names


def exported(driver_run: tuple[int, RunResult], standalone_bus: int, ray_head: RayHead) -> set[str]:
    names = set(samples(scrape(f"http://127.0.0.1:{driver_run[0]}/metrics")))
    names |= set(samples(scrape(f"http://127.0.0.1:{standalone_bus}/metrics")))
    node = samples(scrape(f"http://127.0.0.1:{ray_head.metrics_port}/metrics"))
    hosts = {name for name in node if name.startswith("ray_hivemem_")}
    declared = declared_host_series()
    # the node exports what the code declares (restarts only once a host has restarted)
    assert hosts <= declared, sorted(hosts - declared)
    assert declared - hosts <= {"ray_hivemem_host_restarts_total"}, sorted(declared - hosts)
    return names | declared


METRIC = re.compile(r"\b(?:ray_)?hivemem_[a-z0-9_]+\b")


def test_every_dashboard_query_names_exported_series(
    driver_run: tuple[int, RunResult],
    standalone_bus: int,
    ray_head: RayHead,
    ray_job: dict[str, Any],
) -> None:
    assert ray_job["proc"].returncode == 0  # the node has the hosts' series
    names = exported(driver_run, standalone_bus, ray_head)
    assert "ray_hivemem_host_agent_steps_total" in names
    queried: set[str] = set()
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(METRIC.findall(target["expr"]))
            assert used, (panel["title"], target["expr"])
            assert used <= names, (panel["title"], sorted(used - names))
            queried |= used
    # and every family the code exports is on the dashboard, in some form
    families = {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in names}
    unseen = {f for f in families if not any(q.startswith(f) for q in queried)}
    assert not unseen, sorted(unseen)
    # docs/observability.md lists every family and every panel's queries
    doc = (ROOT / "docs/observability.md").read_text().replace("\\|", "|")
    undocumented = {f for f in families if re.sub(r"_total$", "", f) not in doc}
    assert not undocumented, sorted(undocumented)
    for panel in panels():
        assert all(t["expr"] in doc for t in panel["targets"]), panel["title"]


GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
TARGET_LABELS = {"instance", "job"}
"""The labels Prometheus puts on every series it scrapes."""


def used_labels(expr: str) -> set[str]:
    """The label names ``expr`` groups by or matches on."""
    grouped = {label.strip() for g in GROUPING.findall(expr) for label in g.split(",")}
    matched = {label for s in SELECTOR.findall(expr) for label in MATCHER.findall(s)}
    return (grouped | matched) - {""}


def test_every_dashboard_query_uses_its_series_labels_and_rates_counters(
    driver_run: tuple[int, RunResult],
    standalone_bus: int,
    ray_head: RayHead,
    ray_job: dict[str, Any],
) -> None:
    """A label a query groups by or matches on is one its series carry (grouped by a
    missing label, a panel shows one blank series; matched with ``!~``, everything);
    counters and histogram buckets are read through ``rate()``/``increase()`` (a raw
    counter only ever climbs) or as a series born in the window (``X unless X offset``,
    whose whole count is new), gauges never (their rate is meaningless), and histograms
    through their ``_bucket`` series in ``histogram_quantile``."""
    assert ray_job["proc"].returncode == 0  # the node has the hosts' series
    labels: dict[str, set[str]] = {}
    types: dict[str, str] = {}
    for port in (driver_run[0], standalone_bus, ray_head.metrics_port):
        text = scrape(f"http://127.0.0.1:{port}/metrics")
        for name, names in samples(text).items():
            labels.setdefault(name, set()).update(names)
        types |= kinds(text)
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            used = set(METRIC.findall(expr))
            carried = TARGET_LABELS.union(*(labels.get(name, set()) for name in used))
            assert used_labels(expr) <= carried, (panel["title"], expr, sorted(carried))
            for name in used:
                # no host restarted here, so Ray never exported the restarts counter
                kind = types.get(name, "counter" if name.endswith("_total") else "unknown")
                rated = len(re.findall(rf"\b(?:rate|increase)\({name}\b", expr))
                # a series born in the window, counted whole: two mentions of the name
                rated += 2 * len(re.findall(rf"\b{name}({{[^}}]*}}|) unless {name}\1 offset", expr))
                if kind == "gauge":
                    assert rated == 0, (panel["title"], expr)
                else:
                    assert kind in ("counter", "histogram"), (name, kind)
                    assert rated == len(re.findall(rf"\b{name}\b", expr)), (panel["title"], expr)
                if kind == "histogram":
                    assert name.endswith("_bucket") and "histogram_quantile(" in expr, expr


def units(expr: str) -> set[str] | None:
    """The Grafana units that fit ``expr``'s values, from its metric's base unit (a
    rate or a count may also be a plain number); None for a ratio of two series."""
    if " / " in expr:
        return None
    match = METRIC.search(expr)
    assert match, expr
    name = match[0]
    if "histogram_quantile(" in expr:
        name = name.removesuffix("_bucket")
    elif re.search(rf"\brate\({name}\b", expr):
        # seconds per second: a share of the time
        return {"percentunit"} if name.endswith("_seconds_total") else {"ops", "reqps", "short"}
    elif "increase(" in expr:
        name = name.removesuffix("_total")
    by_unit = {"_seconds": {"s"}, "_bytes": {"bytes"}, "_ratio": {"percentunit"}}
    return next((u for suffix, u in by_unit.items() if name.endswith(suffix)), {"short"})


def test_every_panels_unit_is_its_series_base_unit() -> None:
    """Seconds shown as seconds (not ms), bytes as bytes, ratios (0..1) as percentunit:
    a panel whose unit is not its series' base unit shows numbers off by a factor."""
    for panel in panels():
        unit = panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            fits = units(target["expr"])
            assert fits is None or unit in fits, (panel["title"], target["expr"], unit)


def test_every_alert_names_exported_series(
    driver_run: tuple[int, RunResult], standalone_bus: int, ray_head: RayHead
) -> None:
    names = exported(driver_run, standalone_bus, ray_head)
    rules = yaml.safe_load((ROOT / "deploy/observability/alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        used = set(METRIC.findall(rule["expr"]))
        assert used <= names, (rule["alert"], sorted(used - names))


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for wanted in (
        "requests per second by op",
        "latency p95 by op",
        "items by tier",
        "evictions per second by policy",
        "write decisions per second by policy",
        "task score",
        "ticks per second",
        "host restarts",
        "errors per second",
        "staleness",
        "correct answers per question",
        "and per recall",
    ):
        assert wanted in titles, wanted


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["type"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/hivemem.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "deploy/observability/compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert DASHBOARD.exists()
