"""Multi-view score distillation at toy scale against controls (docs/distillation.md, docs/results.md).

    make run                                   # trains the miniature G (out/runs/finetune/final_model)
    python benchmarks/distillation.py [--steps 400] [--json out/distillation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline.logs import configure_logging  # noqa: E402

configure_logging()

from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.experiments.distillation import DistillationExperimentConfig, format_table, run_distillation_experiment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DistillationExperimentConfig)
    parser.add_argument("--json", default=None, help="also write the rows and timings here")
    args = parser.parse_args()
    result = run_distillation_experiment(config_from_args(DistillationExperimentConfig, args))
    print(format_table(result))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
