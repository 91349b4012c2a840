"""The memory bus: an in-process store of three tiers, and the service over it."""
