"""How long ``python jobs/NAME.py --help`` takes for every job, against a bare interpreter start
measured in the same run (the baseline: what no job can go below). The target is under 2 s each on
2 idle cores: a job parses its flags before it imports torch, diffusers, Ray Train or MLflow.

    python benchmarks/cli_help.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = 2.0


def seconds(command: list[str], repeats: int) -> float:
    """The median wall time of ``command`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per command; the median is printed")
    args = parser.parse_args()
    bare = seconds([sys.executable, "-c", "pass"], args.repeats)
    print(f"{'job':<20} {'--help s':>9} {'x bare':>8}  (bare interpreter: {bare:.2f} s; target < {TARGET_S:g} s)")
    slow = []
    for name in sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "jobs")) if f.endswith(".py")):
        took = seconds([sys.executable, f"jobs/{name}.py", "--help"], args.repeats)
        print(f"{name:<20} {took:>9.2f} {took / bare:>8.1f}{'  over the target' if took >= TARGET_S else ''}")
        if took >= TARGET_S:
            slow.append(name)
    print(f"{len(slow)} of the jobs over {TARGET_S:g} s" + (f": {', '.join(slow)}" if slow else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
