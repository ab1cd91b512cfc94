"""What Ray's own processes cost a render node: CPU seconds per process, idle and during a job.

The render job's overhead over a bare bpy loop (``benchmarks/render.py``) is mostly Ray's
processes, not the project's code (docs/costs.md). This measures them without Blender, so the
figure does not drown in the machine's drift between long renders:

- idle: Ray started as ``benchmarks/render.py`` starts it, Ray Data's cluster actors running, for
  ``--idle-seconds``;
- job: a Ray Data job of the render job's shape (as ``pipeline.render_stage.run_render_job`` wires
  it: one actor-pool map, at most two batches in flight, a zero-CPU write task) whose actor sleeps ``--batch-seconds`` per batch instead of rendering, so
  every CPU second counted is Ray's.

CPU time per process comes from ``/proc/<pid>/stat`` (user + system), before and after, for the
processes whose command line names Ray and this driver. A process started in between counts from
zero. Linux only.

    python benchmarks/ray_overhead.py --batches 10 --batch-seconds 2
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)
from benchmarks.suite_cpu import read_command, read_stat  # noqa: E402


def is_ray_process(pid: str, command: str) -> bool:
    """Ray's daemons and workers (their command lines name ray), and this driver."""
    return pid == str(os.getpid()) or command.startswith("ray::") or "/ray/" in command


def process_cpu_seconds() -> dict[str, tuple[str, float]]:
    """pid -> (command line, user + system CPU seconds so far) for each of Ray's processes."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            command, (_, cpu) = read_command(pid), read_stat(pid)
        except OSError:
            continue
        if is_ray_process(pid, command):
            found[pid] = (command, cpu)
    return found


def print_usage(title: str, before: dict, after: dict, seconds: float, cores: int) -> None:
    used = []
    for pid, (command, cpu) in after.items():
        spent = cpu - before.get(pid, (command, 0.0))[1]
        if spent > 0:
            used.append((spent, pid, command))
    total = sum(spent for spent, _, _ in used)
    print(f"{title}: {total:.2f} CPU s in {seconds:.1f} s = {100.0 * total / (seconds * cores):.1f}% of {cores} cores")
    for spent, pid, command in sorted(used, reverse=True):
        if spent >= 0.05:
            print(f"  {spent:6.2f} s  {pid:>7}  {command[:100]}")


class SleepingRenderer:
    """Stands in for the render actor: holds its CPUs and sleeps instead of rendering."""

    def __init__(self, batch_seconds: float) -> None:
        self.batch_seconds = batch_seconds

    def __call__(self, batch):
        time.sleep(self.batch_seconds)
        return batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--batches", type=int, default=10, help="batches (one asset each) of the sleeping job")
    parser.add_argument("--batch-seconds", type=float, default=2.0, help="seconds each batch sleeps")
    args = parser.parse_args()

    import ray
    from ray.data import Datasink

    class CountingSink(Datasink):
        def write(self, blocks, ctx):
            return sum(block.num_rows for block in blocks)

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    # Ray Data's detached cluster actors, started by a first job in its own driver, as in benchmarks/render.py.
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "render.py"), "--start-ray-data"],
                   capture_output=True, check=True)
    time.sleep(3.0)  # let the start-up settle

    before = process_cpu_seconds()
    time.sleep(args.idle_seconds)
    print_usage("Ray idle", before, process_cpu_seconds(), args.idle_seconds, cores)

    ray.data.DataContext.get_current().enable_progress_bars = False
    before, driver_before = process_cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    dataset = ray.data.from_items([{"index": i} for i in range(args.batches)], override_num_blocks=args.batches)
    dataset = dataset.map_batches(
        SleepingRenderer, fn_constructor_kwargs={"batch_seconds": args.batch_seconds}, batch_size=1,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=2),
        num_cpus=cores)
    dataset.write_datasink(CountingSink(), ray_remote_args={"num_cpus": 0})
    seconds = time.perf_counter() - start
    after, driver_after = process_cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    sleeping = args.batches * args.batch_seconds
    print(f"job of {args.batches} sleeping batches ({sleeping:.0f} s asleep): {seconds:.1f} s, "
          f"{seconds - sleeping:.1f} s more than the sleep")
    print_usage("Ray during the job", before, after, seconds, cores)
    driver = (driver_after.ru_utime + driver_after.ru_stime) - (driver_before.ru_utime + driver_before.ru_stime)
    print(f"driver (this process; Ray Data's executor loop): {driver:.2f} CPU s = "
          f"{100.0 * driver / seconds:.1f}% of one core")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
