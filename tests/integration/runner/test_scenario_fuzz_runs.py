"""Accepted scenario mutants run: three ticks each, hosts and bus in this process.

The unit test builds what a run builds before its first tick; this one runs the ticks
too (the bus's sockets and threads, no Ray), where an agent that validated with no
namespace on a tier it uses was found to fail (``test_scenario_fuzz.py``).
"""

from __future__ import annotations

from hivemem.platform.scenario_fuzz import fuzz


def test_accepted_mutants_run_their_first_ticks() -> None:
    tally = fuzz(300, seed=1, build_every=1, run_every=1)
    bugs = [
        f"mutant {m.index} ({m.base}, {', '.join(m.kinds)}):\n{o.detail}" for m, o in tally.bugs
    ]
    assert not bugs, "\n\n".join(bugs)
    assert tally.ran > 20
