"""Overfit the tiny reconstructor on one rendered object and print PSNR on its non-input views.

    python jobs/render.py --input assets --output out/shards --resolution 64
    python jobs/overfit_recon.py --shards out/shards [--uid UID] [--steps 60]

A check that the reconstructor, the Gaussian renderer and the camera conventions fit together:
PSNR on the 20 views that are not inputs must rise clearly above its step-0 value.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import check_minimums, config_from_args, option  # noqa: E402

logger = logging.getLogger("jobs.overfit_recon")


@dataclasses.dataclass
class OverfitConfig:
    LOCATIONS = {"shards": "input"}  # paths (pipeline.submission)

    shards: str = option(help="render-stage output (folder or URI)")
    uid: str | None = option(None, "object to use (default: the first ok row)")
    steps: int = option(60, "optimiser steps", minimum=1)
    size: int = option(32, "input and supervision resolution", minimum=8)
    seed: int = option(0, "seed of the weights and the views drawn")

    def __post_init__(self) -> None:
        check_minimums(self)


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, OverfitConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        config = config_from_args(OverfitConfig, args)
        import torch  # after parsing: --help stays quick

        from models.reconstructor.model import LGM
        from models.reconstructor.options import PRESETS
        from models.reconstructor.training import overfit_one_object
        from pipeline.data import shards
        from pipeline.data.rows import row_to_tensors

        rows = [row for row in shards.read_rows(config.shards) if config.uid in (None, row["uid"])]
        if not rows:
            raise ValueError(f"no ok row{' with uid ' + config.uid if config.uid else ''} in {config.shards}")
        data = row_to_tensors(rows[0], background=(1.0, 1.0, 1.0))
        torch.manual_seed(config.seed)
        model = LGM(dataclasses.replace(PRESETS["tiny"], input_size=config.size, output_size=config.size))
        result = overfit_one_object(model, data["views"], data["alphas"], data["c2w"], steps=config.steps,
                                    seed=config.seed)
        print(f"object {rows[0]['uid']}: {result.steps} steps, held-out PSNR {result.psnr_before:.2f} dB -> "
              f"{result.psnr_after:.2f} dB (loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f})")

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
