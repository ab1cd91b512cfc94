"""The whole pipeline locally on the embedded default: the README's "run" command.

    python jobs/run_all.py [--assets assets] [--out out] [--prompt TEXT]

Renders the bundled sample assets, builds a tiny text-to-multi-view model and trains its VAE on
the renders, fine-tunes the model on them, trains the tiny reconstructor on its predictions,
starts the Serve endpoint, sends a prompt and writes the 24 views (out/result/grid.png, orbit.gif,
views/) and the Gaussians (out/result/gaussians.ply), then scores them against the prompted
bundled object rendered at the generated cameras (out/result/result.json), with every stage in one
MLflow experiment (out/mlflow.db). No GPU and no downloads; about 13.5 min on 2 CPU cores. The tiny
G memorises the bundled objects and draws the Duck (docs/results.md); see the README for real
weights and data.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args  # noqa: E402
from pipeline.local_run_config import LocalRunConfig  # noqa: E402

logger = logging.getLogger("jobs.run_all")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, LocalRunConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.local_run import run_local  # after parsing: --help stays quick

    def work() -> None:
        run_local(config_from_args(LocalRunConfig, args))  # it logs and writes what it made

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
