"""Multi-view score distillation at toy scale against controls (docs/distillation.md, docs/results.md).

    make run                                   # trains the miniature G (out/runs/finetune/final_model)
    python benchmarks/distillation.py [--steps 400] [--json out/distillation.json]
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

from pipeline.experiments.distillation import DistillationExperimentConfig, format_table, run_distillation_experiment  # noqa: E402
from pipeline.experiments.command import run_experiment  # noqa: E402


def main() -> int:
    return run_experiment(__doc__, DistillationExperimentConfig, run_distillation_experiment, format_table)


if __name__ == "__main__":
    sys.exit(main())
