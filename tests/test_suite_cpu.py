"""``benchmarks/suite_cpu.py``: a command's CPU time by kind of process (docs/running.md quotes it)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

BURN = "import time; end = time.process_time() + 1.2\nwhile time.process_time() < end: pass"


def test_a_commands_child_is_counted_and_its_exit_code_passed_on():
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "suite_cpu.py"), "--interval", "0.1", "--",
                           sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}]); sys.exit(3)"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "kind" not in line]
    burner = [row for row in rows if "end = time.process_time()" in row[-1]]
    # 1.2 s burnt, read every 0.1 s: what the last read before its exit missed is far below the margin
    assert burner and float(burner[0][0].lstrip("| ")) >= 0.5, done.stdout
