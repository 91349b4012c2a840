"""Fuzz the scenario validator with mutated built-in scenarios; print how each was judged.

    python benchmarks/fuzz_scenarios.py --count 100000 --seed 1
    python benchmarks/fuzz_scenarios.py --quick            # 2,000 (CI runs the same count)
    python benchmarks/fuzz_scenarios.py --count 20000 --run-every 1

Every mutant (``hivemem.platform.scenario_fuzz``) is validated as ``hivemem validate``
validates a file; each accepted one (every ``--build-every``-th) is built as a run builds
it before Ray starts, and every ``--run-every``-th built one runs three ticks with its
hosts and its bus in this process. Exits non-zero if a mutant raised anything but a
ScenarioError, was refused without naming where, in more than a few lines, or was
accepted and then failed to build or run. Reproduce one by its seed and index:
``list(mutants(index + 1, seed))[index].text``.
"""

from __future__ import annotations

import argparse
import sys
import time

from hivemem.platform.scenario_fuzz import fuzz


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 mutants")
    parser.add_argument("--build-every", type=int, default=1, help="0: build none")
    parser.add_argument("--run-every", type=int, default=0, help="0: run none")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.count
    start = time.perf_counter()
    tally = fuzz(count, args.seed, args.build_every, args.run_every)
    elapsed = time.perf_counter() - start
    print(f"{'mutation':18s} {'accepted':>9s} {'refused':>9s} {'bugs':>6s}")
    for kind, counts in sorted(tally.by_kind.items()):
        bugs = counts["bug"] + counts["build_bug"]
        print(f"{kind:18s} {counts['accepted']:>9,} {counts['refused']:>9,} {bugs:>6,}")
    for mutant, outcome in tally.bugs:
        print(
            f"\n--- mutant {mutant.index} of {mutant.base} ({', '.join(mutant.kinds)}): {outcome.verdict}"
        )
        print(outcome.detail.rstrip()[-2_000:])
    bugs = tally.verdicts["bug"] + tally.verdicts["build_bug"]
    print(f"mutants: {count}")
    print(f"mutants_per_s: {count / elapsed:,.0f}")
    print(f"accepted: {tally.verdicts['accepted']} (built {tally.built}, run {tally.ran})")
    print(f"refused: {tally.verdicts['refused']}")
    print(f"validation_bugs: {tally.verdicts['bug']}")
    print(f"build_or_run_bugs: {tally.verdicts['build_bug']}")
    print(f"seconds: {elapsed:.1f}")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
