"""
Issue 11's measure: each kind of bug in the visible gallery, found with the defaults in every one of 20 seeded runs?

Run by hand from the repository root (not in CI, not as a timed test)::

    python bench/bench_toolkit.py                 # 20 seeds per kind, every kind
    python bench/bench_toolkit.py --seeds 5 --kind 1 --kind 3
    python bench/bench_toolkit.py --show          # also print one failure message per kind

For each kind of ``tests/testing/gallery_kinds.py``, the buggy workflow's
``WorkflowMachine`` (hypothesis' default budget, no example database) is run
once per seed 0..N-1 and the twin's once per seed too; the table gives how many
runs found the bug (and named it as the kind requires), how many twin runs
passed without a coverage warning, and the median and worst time of a buggy
run and of a twin run. It exits 1 when a kind was missed or a twin failed in any run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import structlog.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testing.gallery_kinds import KINDS, Kind, Outcome, run


def _measure(kind: Kind, seeds: int) -> tuple[list[Outcome], list[Outcome]]:
    buggy = [run(kind.buggy(), seed) for seed in range(seeds)]
    twin = [run(kind.twin(), seed) for seed in range(seeds)]
    return buggy, twin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="seeded runs per workflow (default 20)")
    parser.add_argument("--kind", type=int, action="append", help="only this kind (repeatable)")
    parser.add_argument("--show", action="store_true", help="print the first failure message of each kind")
    args = parser.parse_args()
    kinds = [k for k in KINDS if not args.kind or k.number in args.kind]
    print(
        f"{'kind':<48} {'found':>7} {'twin ok':>8} {'median s':>9} {'worst s':>8} {'twin med s':>11} {'twin worst s':>13}"
    )
    missed = False
    shown: list[tuple[Kind, str]] = []
    with structlog.testing.capture_logs():
        for kind in kinds:
            buggy, twin = _measure(kind, args.seeds)
            found = sum(1 for o in buggy if kind.found(o))
            passed = sum(1 for o in twin if kind.passed(o))
            times = [o.seconds for o in buggy]
            twin_times = [o.seconds for o in twin]
            title = f"{kind.number}. {kind.title}"
            print(
                f"{title[:48]:<48} {found:>3}/{args.seeds:<3} {passed:>4}/{args.seeds:<3} "
                f"{statistics.median(times):>9.2f} {max(times):>8.2f} "
                f"{statistics.median(twin_times):>11.2f} {max(twin_times):>13.2f}",
                flush=True,
            )
            missed = missed or found < args.seeds or passed < args.seeds
            first = next((o for o in buggy if kind.found(o)), None)
            if first is not None:
                text = str(first.error) if first.error is not None else first.coverage_warning() or ""
                notes = getattr(first.error, "__notes__", [])
                shown.append((kind, "\n".join([text, *notes])))
            for o in twin:
                if not kind.passed(o):
                    what = o.error if o.error is not None else o.coverage_warning()
                    print(f"    twin failed: {str(what).splitlines()[0]}")
                    break
    if args.show:
        for kind, text in shown:
            print(f"\n=== {kind.number}. {kind.title}\n{text}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
