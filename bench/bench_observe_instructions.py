"""
The overhead of metrics and tracing in instructions per step, counted by valgrind (issue 12).

Wall-clock ratios on a shared, loaded machine drift by more than the effect
(see ``bench/README.md``, section ``bench_observe.py``); instruction counts do
not. This script needs **valgrind** (``sudo apt-get install -y valgrind``): it
runs ``bench/bench_observe.py --child MODE --instances N --repeat 0`` (one
workload of N orders, five steps each, in that configuration) under
``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``, for N = ``--small`` (200) and
``--large`` (2000), and reports per step::

    (instructions at N=large - instructions at N=small) / ((large - small) * 5)

so that the interpreter's start, the imports and the engine's set-up cancel out.
It also reports the part spent in the cyclic garbage collector (callgrind's
inclusive count of ``gc_collect_main``) and the figure without it: the in-memory
store keeps every instance, so full collections are few and large, and one that
falls in one mode's range and not in another's moves a figure by about 2%
(between 200 and 1000 orders, a full collection ran with ``metrics`` and not
with ``baseline``; between 200 and 2000 each has one).
The modes are ``bench_observe.py``'s: ``baseline`` (the default engine, both
extras installed), ``none`` (prometheus-client and opentelemetry unimportable),
``metrics`` (``Metrics()`` only) and ``on`` (``Metrics()`` and ``tracing=True``
with opentelemetry-api and no SDK). Run from the repository root::

    python bench/bench_observe_instructions.py                 # 15-20 minutes on two busy cores
    python bench/bench_observe_instructions.py --modes baseline on --jobs 1

Targets (issue 12): ``on`` at most 10% over ``baseline``, ``none`` at most 1%.
It prints each figure and PASS/FAIL, and exits 1 when a target is missed (2 when
valgrind is missing or a child fails).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent / "bench_observe.py"
STEPS_PER_ORDER = 5
MODES = ("baseline", "none", "metrics", "on")
TARGETS = {"on": 0.10, "none": 0.01}

_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)
# callgrind_annotate's inclusive lines of the cyclic collector (its code inlined from headers included).
_COLLECTOR = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:gc_collect_main(?:\s|$)", re.MULTILINE)


class ChildFailed(RuntimeError):
    """A measured child process exited with an error."""


def instructions(mode: str, orders: int, out: Path, *, reuse: bool = False) -> tuple[int, int]:
    """
    The instructions callgrind counts for one workload of *orders* orders in *mode*.

    Returns:
        The whole process's, and those in the cyclic garbage collector (inclusive).
        With *reuse*, callgrind's file from an earlier run in *out* is read again
        instead of running the workload.
    """
    target = out / f"callgrind.{mode}.{orders}"
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={target}",
        sys.executable,
        str(BENCH),
        "--child",
        mode,
        "--instances",
        str(orders),
        "--repeat",
        "0",
    ]
    done = (
        None
        if reuse and target.exists()
        else subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - valgrind and this tree's bench
    )
    if done is not None and done.returncode:
        msg = f"{mode} with {orders} orders exited {done.returncode}:\n{done.stderr[-2000:]}"
        raise ChildFailed(msg)
    found = _TOTALS.search(target.read_text())
    if found is None:
        msg = f"{target} has no totals line"
        raise ChildFailed(msg)
    annotated = subprocess.run(  # noqa: S603 - valgrind's own tool on the file just written
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(target)],  # noqa: S607 - from PATH, with valgrind
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    collector = sum(int(n.replace(",", "")) for n in _COLLECTOR.findall(annotated))
    return int(found.group(1)), collector


def main(argv: list[str] | None = None) -> int:
    """Measure the modes asked for, print the per-step figures and the verdicts."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to measure (baseline always)")
    p.add_argument("--small", type=int, default=200, help="orders of the smaller workload")
    p.add_argument("--large", type=int, default=2000, help="orders of the larger workload")
    p.add_argument("--jobs", type=int, default=2, help="valgrind processes at a time")
    p.add_argument("--keep", type=Path, help="keep callgrind's files in this folder (for callgrind_annotate)")
    p.add_argument(
        "--reuse",
        nargs="*",
        choices=MODES,
        default=[],
        help="with --keep: read these modes' files kept by an earlier run (their code unchanged) instead of running them",
    )
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: sudo apt-get install -y valgrind", file=sys.stderr)
        return 2
    modes = ["baseline", *(m for m in args.modes if m != "baseline")]
    runs: list[tuple[str, int]] = [(mode, n) for mode in modes for n in (args.small, args.large)]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        out = args.keep if args.keep is not None else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        try:

            def one(run: tuple[str, int]) -> tuple[int, int]:
                return instructions(run[0], run[1], out, reuse=run[0] in args.reuse)

            counted = pool.map(one, runs)
            counts: dict[tuple[str, int], tuple[int, int]] = dict(zip(runs, counted, strict=True))
        except ChildFailed as exc:
            print(exc, file=sys.stderr)
            return 2
    steps = (args.large - args.small) * STEPS_PER_ORDER
    per_step = {m: (counts[m, args.large][0] - counts[m, args.small][0]) / steps for m in modes}
    in_gc = {m: (counts[m, args.large][1] - counts[m, args.small][1]) / steps for m in modes}
    base = per_step["baseline"]
    base_outside = base - in_gc["baseline"]
    print(
        f"instructions per step (callgrind, PYTHONHASHSEED=0, ({args.large} - {args.small} orders) x "
        f"{STEPS_PER_ORDER} steps = {steps} steps), python {sys.version.split()[0]}; the cyclic collector's "
        "part, and the figure without it (when a full collection falls in one mode's range and not in another's):"
    )
    ok = True
    for mode in modes:
        over = per_step[mode] / base - 1
        outside = per_step[mode] - in_gc[mode]
        line = (
            f"  {mode:9} {per_step[mode] / 1000:8.1f}k  {over:+7.1%}   collector {in_gc[mode] / 1000:5.1f}k   "
            f"without it {outside / 1000:6.1f}k {outside / base_outside - 1:+7.1%}"
        )
        if mode in TARGETS:
            passed = over <= TARGETS[mode]
            ok = ok and passed
            line += f"  target <= +{TARGETS[mode]:.0%}: {'PASS' if passed else 'FAIL'}"
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
