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
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT

from pipeline.logs import configure_logging  # noqa: E402

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.local_run_config import LocalRunConfig  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, LocalRunConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.local_run import run_local  # after parsing: --help stays quick

    run_local(config_from_args(LocalRunConfig, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
