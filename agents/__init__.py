"""Agents: the agent protocol, built-in agents and the Ray host actor."""
