"""Contract suites that users run over their own tiers and policies."""
