"""The staleness histogram's buckets reach the README's 100,000-tick run, finely enough
for its p95: relay_qa's shared facts are recalled at any age up to the run's length
(a third were over 1,000 ticks old after 1,500 ticks), and the buckets stopped at 10,000
with nothing between 1,000 and 10,000."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from hivemem.memory_bus.metrics import AGE_BUCKETS

README = Path(__file__).resolve().parents[3] / "README.md"


def test_recalled_ages_of_the_readmes_run_fall_in_narrow_finite_buckets() -> None:
    ticks = re.search(r"--set run\.ticks=(\d+)", README.read_text(encoding="utf-8"))
    assert ticks
    assert AGE_BUCKETS[-1] >= int(ticks.group(1))
    wide = [(a, b) for a, b in itertools.pairwise(AGE_BUCKETS[1:]) if b > 2.5 * a]
    assert not wide
    assert len(AGE_BUCKETS) <= 20  # a series per bucket and tier
