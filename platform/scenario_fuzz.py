"""A structured mutation fuzzer for scenario files.

Each mutant (:mod:`hivemem.platform.scenario_mutants`) starts from a built-in scenario
(``scenarios/*.yaml``) and is changed once to a few times: a key deleted or renamed to a
near miss, a value replaced by one of another type or by an extreme number, a known
field set to a value past its bounds, a key given twice, the YAML broken, the top level
made a list or emptied. Every mutant is then
validated as ``hivemem validate`` validates a file (:func:`validate_text`), and each
that is accepted may also be built the way a run builds it before Ray starts
(:func:`build_run_setup`), so a file that validates and then fails as it runs is found.

Used by the test suite (a few thousand mutants) and by ``benchmarks/fuzz_scenarios.py``
(any count). Every mutant comes from a seeded generator: ``mutants(count, seed)`` makes
the same ones in the same order again, so a failure is reproducible by its seed and index.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field

from hivemem.agents.calls import build_of
from hivemem.memory_bus.embedder import make_embedder
from hivemem.memory_bus.store import MemoryStore
from hivemem.platform.scenario import (
    Scenario,
    absolute_checkpoints,
    dump_resolved,
    parse_scenario,
)
from hivemem.platform.scenario_mutants import Mutant, mutants
from hivemem.platform.scenario_problems import SHOWN_PROBLEMS, ScenarioError
from hivemem.scenarios.calls import observe_of, score_of

SOURCE = "<fuzz>"


@dataclass
class Outcome:
    """What became of one mutant.

    Attributes:
        verdict: ``accepted``, ``refused`` (a :class:`ScenarioError`), ``bug`` (any other
            exception while validating, or a refusal that names no place in the file),
            or ``build_bug`` (accepted, then failed as a run would build or run it).
        detail: The error's text (its traceback for a bug).
    """

    verdict: str
    detail: str = ""


@dataclass
class Tally:
    """Counts of outcomes, by verdict and by mutation kind, and the bugs' first examples."""

    verdicts: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    bugs: list[tuple[Mutant, Outcome]] = field(default_factory=list)
    built: int = 0
    ran: int = 0

    def add(self, mutant: Mutant, outcome: Outcome, keep: int = 20) -> None:
        self.verdicts[outcome.verdict] += 1
        for kind in mutant.kinds:
            self.by_kind.setdefault(kind, Counter())[outcome.verdict] += 1
        if outcome.verdict in ("bug", "build_bug") and len(self.bugs) < keep:
            self.bugs.append((mutant, outcome))


# --- judging them ----------------------------------------------------------------------


def validate_text(text: str, source: str = SOURCE) -> Scenario:
    """Validate scenario text as ``hivemem validate`` validates a file
    (:func:`~hivemem.platform.scenario.load_scenario` once the file is read)."""
    return absolute_checkpoints(parse_scenario(text, source))


MAX_LINES = SHOWN_PROBLEMS + 2
"""Lines a refusal may run to: its heading, the problems it shows, "and N more"."""

MAX_LINE = 1_000
"""Characters a refusal's line may run to, whatever the file held (a 100,000-character
key is named, not echoed whole)."""


def judge(mutant: Mutant) -> tuple[Outcome, Scenario | None]:
    """Validate ``mutant``: accepted (with its scenario), refused, or a bug.

    A refusal is a bug too when one of its problems names neither a path in the file nor
    a line (and is not about the file as a whole), or when its text passes
    :data:`MAX_LINES` lines or :data:`MAX_LINE` characters in a line.
    """
    try:
        scenario = validate_text(mutant.text)
    except ScenarioError as exc:
        text = str(exc)
        unplaced = [p for p in exc.problems if not (p.path or p.line or _whole_file(p.message))]
        if unplaced:
            return Outcome("bug", f"a problem with no place in the file: {unplaced[0]}"), None
        lines = text.splitlines()
        if len(lines) > MAX_LINES or max(map(len, lines)) > MAX_LINE:
            size = f"{len(lines):,} lines, the longest {max(map(len, lines)):,} characters"
            return Outcome("bug", f"a refusal of {size}: {text[:300]}..."), None
        return Outcome("refused", text), None
    except Exception:
        return Outcome("bug", traceback.format_exc()), None
    return Outcome("accepted"), scenario


def _whole_file(message: str) -> bool:
    return message.startswith(("expected a mapping at the top", "not valid YAML"))


BUILD_TICKS = 3
"""Ticks of the task observed and scored (a question comes once a fact has been seen)."""

BUILD_AGENTS = 64
"""Agents built per roster entry at most (they are alike but for their ids and seeds)."""


def build_run_setup(scenario: Scenario) -> None:
    """Build what ``hivemem run`` builds of ``scenario`` before and at its first tick,
    without Ray or sockets: the resolved file read back (the run folder keeps it), the
    task and its baseline's, some agents of every roster entry, the store and its
    embedder, the task's observations and scores of its first :data:`BUILD_TICKS` ticks.

    Raises:
        Exception: whatever a run of this scenario would have failed with.
    """
    again = parse_scenario(dump_resolved(scenario), "<resolved>")
    if again.model_dump() != scenario.model_copy(update={"memory": again.memory}).model_dump():
        raise AssertionError("the resolved scenario reads back otherwise")
    for baseline in (False, True) if scenario.run.baseline else (False,):
        task = scenario.make_task(baseline)
        ids = frozenset(s.agent_id for s in task.roster)
        seen: Counter[str] = Counter()
        for spec in task.roster:
            seen[spec.role] += 1
            if seen[spec.role] <= BUILD_AGENTS:
                build_of(spec)  # as a host builds it (a plug-in's error names the agent)
        for t in range(min(BUILD_TICKS, scenario.run.ticks)):
            observe_of(task, scenario.task.family, t, ids)
            score_of(task, scenario.task.family, t, {})
    config = scenario.store_config()
    MemoryStore(config)
    make_embedder(config.embedder, config.dim)


RUN_AGENTS = 1_000
"""Agents a scenario may have for :func:`run_briefly` to run it (a bigger one is built,
not run: its run's first ticks take seconds)."""


def run_briefly(scenario: Scenario) -> None:
    """Run :data:`BUILD_TICKS` ticks of ``scenario`` as ``hivemem run`` would, but with
    its agent hosts in this process (as RL training does) and its bus embedded: no Ray,
    but the bus's sockets and threads. Does nothing for a scenario of more than
    :data:`RUN_AGENTS` agents.

    Raises:
        Exception: whatever the run failed with.
    """
    from hivemem.platform.rl.sim import run_episode  # the bus server: sockets, threads

    if sum(entry.count for entry in scenario.agents) > RUN_AGENTS:
        return
    ticks = min(BUILD_TICKS, scenario.run.ticks)
    short = scenario.model_copy(update={"run": scenario.run.model_copy(update={"ticks": ticks})})
    run_episode(short, tier="shared")


def fuzz(count: int, seed: int, build_every: int = 1, run_every: int = 0) -> Tally:
    """Validate ``count`` mutants (:func:`mutants`); build every ``build_every``-th one
    accepted (:func:`build_run_setup`; 0 builds none) and run every ``run_every``-th one
    built (:func:`run_briefly`; 0 runs none). Returns the tally."""
    tally = Tally()
    accepted = 0
    for mutant in mutants(count, seed):
        outcome, scenario = judge(mutant)
        if scenario is not None:
            accepted += 1
            if build_every and accepted % build_every == 0:
                tally.built += 1
                steps = [build_run_setup]
                if run_every and tally.built % run_every == 0:
                    tally.ran += 1
                    steps.append(run_briefly)
                try:
                    for step in steps:
                        step(scenario)
                except Exception:
                    outcome = Outcome("build_bug", traceback.format_exc())
        tally.add(mutant, outcome)
    return tally
