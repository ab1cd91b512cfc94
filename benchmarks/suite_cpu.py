"""Where a command's CPU time goes, by kind of process: the test suite's budget is CPU-bound on 2
cores, so the question for each of its minutes is which processes spend it.

Runs the command, reads every process's user + system time (``/proc/<pid>/stat``) every
``--interval`` seconds and its command line every other read (Ray renames its workers as they take
on actors: ``ray::IDLE`` -> ``ray::RayTrainWorker``...), then prints CPU seconds per kind (Ray actor
class, Ray daemon, job script, test process...) beside the whole machine's busy time from
``/proc/stat`` over the same wall time: the gap is what the sampling missed (processes that lived
less than one interval) and the kernel's own. A process already running at the start counts from
its first read. Every process on the machine counts: measure on an otherwise idle one. Linux only.

    python benchmarks/suite_cpu.py -- make test
    python benchmarks/suite_cpu.py --top 20 -- .venv/bin/python -m pytest tests/test_training.py
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
DAEMONS = ("raylet", "gcs_server", "dashboard/agent.py", "runtime_env/agent", "dashboard.py", "log_monitor",
           "monitor.py", "render.worker", "chromium")


def read_stat(pid: str) -> tuple[int, float]:
    """(start time in clock ticks since boot, user + system CPU seconds so far) of process ``pid``;
    OSError once it is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": utime, stime, starttime are 14, 15, 22
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / TICK


def read_command(pid: str) -> str:
    """The command line of process ``pid`` on one line (arguments joined by single spaces); OSError
    once it is gone."""
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return " ".join(cmdline.read().decode(errors="replace").replace("\0", " ").split())


def busy_seconds() -> float:
    """The whole machine's non-idle CPU seconds so far (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6)) / TICK


def kind(titles: list[str]) -> str:
    """One name per kind of process from the command lines it had: a Ray actor's class, a daemon, a job."""
    named = [title for title in titles if title.startswith("ray::") and not title.startswith("ray::IDLE")]
    if named:
        return "ray::" + re.match(r"ray::([A-Za-z_]*)", named[0]).group(1)
    if any(title.startswith("ray::IDLE") for title in titles):
        return "ray:: worker that ran nothing"
    last = titles[-1]
    for daemon in DAEMONS:
        if daemon in last:
            return daemon
    job = re.search(r"(jobs|benchmarks)/\w+\.py", last)
    if job:
        return job.group(0)
    if "pytest" in last or "exec(eval(sys.stdin.readline()))" in last:  # pytest and its xdist workers
        return "pytest (tests in its own process)"
    program, _, arguments = last.partition(" ")
    return f"{os.path.basename(program)} {arguments}"[:80]  # the program's name, not its path


def sample(command: list[str], interval: float) -> tuple[dict, float, float, int]:
    """Run ``command``; returns ({(pid, start): [titles, first cpu, last cpu]}, wall, busy, returncode)."""
    seen: dict[tuple[int, int], list] = {}
    began, busy_before = time.perf_counter(), busy_seconds()
    child = subprocess.Popen(command)
    reads = 0
    while True:
        done = child.poll() is not None
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                start, cpu = read_stat(name)
                # A process already running counts from its first read, a new one from zero.
                entry = seen.setdefault((int(name), start), [[], cpu if reads == 0 else 0.0, cpu])
                entry[2] = cpu
                if reads % 2 == 0 or not entry[0]:
                    title = read_command(name)
                    if title and (not entry[0] or entry[0][-1] != title):
                        entry[0].append(title)
            except (OSError, ValueError, IndexError):
                continue  # gone between listing and reading
        reads += 1
        if done:
            break
        time.sleep(interval)
    return seen, time.perf_counter() - began, busy_seconds() - busy_before, child.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between reads of /proc")
    parser.add_argument("--top", type=int, default=30, help="kinds of process to list")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    seen, wall, busy, code = sample(command, args.interval)
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for titles, first, last in seen.values():
        if titles:  # kernel threads have no command line
            totals[kind(titles)][0] += last - first
            totals[kind(titles)][1] += 1
    counted = sum(cpu for cpu, _ in totals.values())
    print(f"\n{' '.join(command)}: exit {code}, {wall:.0f} s wall; the machine busy {busy:.0f} CPU-s "
          f"({busy / wall:.2f} cores), of it {counted:.0f} counted in {sum(n for _, n in totals.values())} processes")
    print("| CPU-s | processes | per process | kind |\n|---:|---:|---:|---|")
    for name, (cpu, count) in sorted(totals.items(), key=lambda item: -item[1][0])[:args.top]:
        print(f"| {cpu:.1f} | {count} | {cpu / count:.1f} | {name} |")
    return code


if __name__ == "__main__":
    sys.exit(main())
