"""team_insights: teams solve repeated small tasks with hidden rules and learn insights.

Each task type has one hidden correct option. Every tick each active solver gets a task
of a random type, picks an option, and hears next tick whether it worked. Solvers that
remember write every outcome as an event node (level 0) on their team's graph and, on a
success, promote the events of that task type to an insight node (level 2: "for task T
use option O", as G-Memory does), so teammates, newcomers and later episodes go straight
to the answer. Newcomers join halfway through the run. Score: success rate, by episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from hivemem.agents.base import (
    AGENT_TYPES,
    Action,
    AgentSpec,
    BaseAgent,
    Observation,
    Promotion,
    Proposal,
    Recall,
)
from hivemem.agents.builtin import check_namespaces, namespace_for
from hivemem.memory_bus.errors import InvalidInputError
from hivemem.memory_bus.interfaces import Hit
from hivemem.memory_bus.validation import as_k
from hivemem.scenarios.base import TASKS, Task, TaskParams, TickDraws, ratio
from pydantic import Field

EVENT, INSIGHT = 0, 2


class InsightParams(TaskParams):
    task_types: int = Field(8, ge=1, le=1000)
    options: int = Field(6, ge=2, le=100)
    episode_ticks: int = Field(5, ge=1, description="ticks per episode")


def _task_text(task_type: int) -> str:
    return f"task type t{task_type} needs the right option"


@TASKS.register("team_insights")
class TeamInsights(Task):
    family = "team_insights"
    Params = InsightParams
    roles: ClassVar[dict[str, str]] = {
        "solver": "solves tasks from the start",
        "newcomer": "joins in the second half",
    }
    baseline_agent: ClassVar[dict[str, str]] = {"*": "team_insights.random"}
    score_name = "success rate"

    def __init__(self, params: Any, roster: list[AgentSpec], seed: int, ticks: int) -> None:
        super().__init__(params, roster, seed, ticks)
        self.p: InsightParams = params
        self.draws = _InsightDraws(
            params, self.agents_of("solver"), self.agents_of("newcomer"), seed, ticks
        )
        self.rule = self.draws.rule  # the same whenever the draws start over
        self.late = {s.agent_id for s in self.agents_of("newcomer")}
        self.last: dict[str, dict[str, Any]] = {}

    def episode(self, t: int) -> int:
        return t // self.p.episode_ticks

    def observe(self, t: int) -> dict[str, Observation]:
        obs: dict[str, Observation] = {}
        self.draws.forget_before(t)
        for aid, task_type in self.draws.tick(t).items():
            obs[aid] = {
                "task": {
                    "type": task_type,
                    "options": self.p.options,
                    "text": _task_text(task_type),
                }
            }
        if t > 0:
            for aid, prev in self.last.items():
                obs.setdefault(aid, {})["feedback"] = prev
        return obs

    def score(self, t: int, answers: dict[str, Any]) -> dict[str, float]:
        ep = self.episode(t)
        out: dict[str, float] = {f"attempts_ep{ep}": 0.0, f"successes_ep{ep}": 0.0}
        self.last = {}
        for aid, task_type in self.draws.tick(t).items():
            choice = answers.get(aid)
            ok = choice is not None and int(choice) == int(self.rule[task_type])
            out[f"attempts_ep{ep}"] += 1
            out[f"successes_ep{ep}"] += ok
            if aid in self.late:
                out["newcomer_attempts"] = out.get("newcomer_attempts", 0.0) + 1
                out["newcomer_successes"] = out.get("newcomer_successes", 0.0) + ok
            if choice is not None:
                self.last[aid] = {"type": task_type, "option": int(choice), "success": bool(ok)}
        return out

    def headline(self, totals: Mapping[str, float]) -> tuple[float, float]:
        """Every episode's successes and attempts (newcomers' are among them)."""
        successes = sum(v for k, v in totals.items() if k.startswith("successes_ep"))
        return successes, sum(v for k, v in totals.items() if k.startswith("attempts_ep"))

    def outcome_kinds(self, parts: Mapping[str, float]) -> dict[str, float]:
        """``attempts`` and ``successes`` over all episodes, and the newcomers' parts:
        per-episode names would make a new series every ``episode_ticks`` ticks (the
        episode a count belongs to is the time it was counted at)."""
        successes, attempts = self.headline(parts)
        out = {"attempts": attempts, "successes": successes}
        return out | {k: v for k, v in parts.items() if k.startswith("newcomer_")}

    def summary(self, totals: dict[str, float]) -> dict[str, float | None]:
        eps = sorted({int(k.rsplit("ep", 1)[1]) for k in totals if k.startswith("attempts_ep")})
        out = {
            "score": ratio(*self.headline(totals)),
            "newcomers": ratio(
                totals.get("newcomer_successes", 0), totals.get("newcomer_attempts", 0)
            ),
        }
        for e in eps:
            out[f"episode_{e}"] = ratio(totals[f"successes_ep{e}"], totals[f"attempts_ep{e}"])
        return out


class _InsightDraws(TickDraws[dict[str, int]]):
    """team_insights' ticks: each task type's hidden right option is drawn first, then,
    tick by tick, the task type of every active solver (newcomers from the run's half)."""

    def __init__(
        self,
        p: InsightParams,
        solvers: list[AgentSpec],
        newcomers: list[AgentSpec],
        seed: int,
        ticks: int,
    ) -> None:
        self.p, self.solvers, self.newcomers, self.seed = p, solvers, newcomers, seed
        super().__init__(ticks)

    def _reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.rule = self.rng.integers(self.p.options, size=self.p.task_types)

    def _draw(self, t: int) -> dict[str, int]:
        agents = self.solvers + (self.newcomers if t >= self.ticks // 2 else [])
        return {s.agent_id: int(self.rng.integers(self.p.task_types)) for s in agents}


def _pick(spec: AgentSpec, t: float, options: list[int]) -> int:
    rng = np.random.default_rng([spec.seed, int(t), 7])
    return int(options[int(rng.integers(len(options)))])


@AGENT_TYPES.register("team_insights.solver")
class InsightSolver(BaseAgent):
    """Recalls the team graph for the task type; follows an insight, else avoids known failures."""

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        try:
            self.group, self.k = self.settings_of(spec.params)
        except ValueError as exc:  # the registry makes it a ConfigError: name the agent
            raise ValueError(f"agent {self.agent_id!r}: {exc}") from None

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Refuse bad params as the scenario is validated, building nothing."""
        cls.settings_of(params)

    @classmethod
    def check_groups(cls, params: dict[str, Any], groups: list[str]) -> None:
        check_namespaces(["graph"], cls.settings_of(params)[0], groups)

    @staticmethod
    def settings_of(params: dict[str, Any]) -> tuple[str | None, int]:
        """(group, k) from ``params``, checked (``k`` as the bus bounds a search's).

        Raises:
            TypeError: an unknown param. ValueError: a bad value.
        """
        p = dict(params)
        group = p.pop("group", None)
        k = p.pop("k", 24)
        if p:
            raise TypeError(f"unknown team_insights.solver params: {sorted(p)}")
        if group is not None and not isinstance(group, str):
            raise ValueError(f"group must be a str, got {group!r}")
        try:
            return group, as_k(k)
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None

    def _ns(self) -> str:
        return namespace_for(self.spec, "graph", self.group)

    def plan(self, t: float, obs: Observation) -> list[Recall]:
        recalls = []
        if "task" in obs:
            recalls.append(Recall("graph", self._ns(), obs["task"]["text"], self.k))
        if "feedback" in obs:
            recalls.append(Recall("graph", self._ns(), _task_text(obs["feedback"]["type"]), self.k))
        return recalls

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        action = Action()
        hits = [h for hs in recalled for h in hs]
        if "task" in obs:
            task = obs["task"]
            about = [h for h in hits if h.item.meta.get("task_type") == task["type"]]
            insight = [h for h in about if h.item.level == INSIGHT]
            if insight:
                action.answer = int(insight[0].item.meta["option"])
            else:
                failed = {
                    int(h.item.meta["option"]) for h in about if not h.item.meta.get("success")
                }
                untried = [o for o in range(task["options"]) if o not in failed]
                action.answer = _pick(self.spec, t, untried or list(range(task["options"])))
        fb = obs.get("feedback")
        known = [h for h in hits if fb and h.item.meta.get("task_type") == fb["type"]]
        if fb and not any(h.item.level == INSIGHT for h in known):
            # something was learned only while no insight covers the task type
            verdict = "worked" if fb["success"] else "failed"
            meta = {
                "kind": "event",
                "task_type": fb["type"],
                "option": fb["option"],
                "success": fb["success"],
            }
            text = f"{_task_text(fb['type'])}: option {fb['option']} {verdict}"
            action.writes.append(Proposal("graph", self._ns(), text, meta, level=EVENT))
            if fb["success"]:
                parent = Proposal(
                    "graph",
                    self._ns(),
                    f"{_task_text(fb['type'])}: insight, use option {fb['option']}",
                    {"kind": "insight", "task_type": fb["type"], "option": fb["option"]},
                    importance=1.0,
                    level=INSIGHT,
                )
                children = tuple(h.id for h in known if h.item.level == EVENT)
                if children:
                    action.promotions.append(Promotion(self._ns(), children, parent))
                else:
                    action.writes.append(parent)
        return action


@AGENT_TYPES.register("team_insights.random")
class RandomSolver(BaseAgent):
    """The no-memory baseline: a fresh random option every time."""

    def act(self, t: float, obs: Observation, recalled: list[list[Hit]]) -> Action:
        if "task" not in obs:
            return Action()
        return Action(answer=_pick(self.spec, t, list(range(obs["task"]["options"]))))
