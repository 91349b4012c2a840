"""Tests of metrics, dashboards and deployment (a package so fixtures can be package-scoped)."""
