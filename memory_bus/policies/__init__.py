"""Eviction and write policies, built in and by name."""
