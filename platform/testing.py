"""The checks a user runs over an agent type or a task family of their own:
:func:`check_agent_type` and :func:`check_task_family`.

A run asks a task and its agents for their answers on the driver and in agent hosts
(Ray actors, other processes), and checks each answer as it comes
(:mod:`hivemem.scenarios.calls`, :mod:`hivemem.agents.calls`): a plug-in that breaks
the protocol stops the run at the tick it does, on a cluster. What the run cannot see
at all is worse: an agent that keeps what it knows in itself answers otherwise once a
restarted host has rebuilt it from its spec; one whose answers vary, or that changes
the observation it shares with the agents of its host, makes a seeded run
irreproducible; a task whose ``summary`` is not the ratio its ``headline`` says
exports a score the table does not show.

These checks run the plug-in through a few ticks of a scenario in this process, with
the real runner, agent hosts and bus, and no Ray (:mod:`hivemem.platform.plugin_runs`:
the hosts are plain objects, the bus embedded, as in an RL episode). The plug-in is
wrapped in a checking twin that the run builds and asks as it would the plug-in
(:class:`~hivemem.platform.agent_checks.CheckedAgent`,
:class:`~hivemem.platform.task_checks.CheckedTask`): it checks those promises besides
the run's own. A broken promise raises
:class:`~hivemem.memory_bus.testing.ContractFailure` (an ``AssertionError``, as pytest
expects) naming the tick, the agent or method, and what was answered.

Example:
    >>> from hivemem.platform.testing import check_agent_type, check_task_family
    >>> check_agent_type("fact_memory", scenario="relay_qa", ticks=4)["recalls"] > 0
    True
    >>> check_task_family("relay_qa", ticks=4)["asked"] > 0
    True
"""

from __future__ import annotations

from hivemem.platform.agent_checks import check_agent_type
from hivemem.platform.plugin_runs import ScenarioLike
from hivemem.platform.task_checks import check_task_family

__all__ = ["ScenarioLike", "check_agent_type", "check_task_family"]
