"""Importing this module registers the built-in task families and their agents."""

from hivemem.agents import builtin  # noqa: F401
from hivemem.scenarios import capacity_stream, evolving_facts, relay_qa, team_insights  # noqa: F401

BUILTIN_MODULES = ["hivemem.scenarios.families"]
"""What an agent host imports so every built-in agent type is registered."""
