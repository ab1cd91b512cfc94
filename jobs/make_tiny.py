"""Build tiny random-weight models offline and save them in the real checkpoint layout.

    python jobs/make_tiny.py --kind t2v --output out/tiny-t2v
    python jobs/make_tiny.py --kind i2v --output out/tiny-i2v
    python jobs/make_tiny.py --kind lgm --output out/tiny-lgm
    python jobs/make_tiny.py --kind metrics --output out/tiny-metrics

The diffusion directories load through the same code as published checkpoints
(text-to-video-ms-1.7b, i2vgen-xl); the LGM directory through ``LGM.from_pretrained``. Tests and the
local demo use them. ``metrics`` writes random CLIP, RAFT and LPIPS weights in their published
layouts, for trying ``jobs/evaluate.py`` offline (the scores are then meaningless as numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args, option  # noqa: E402

logger = logging.getLogger("jobs.make_tiny")


@dataclasses.dataclass
class MakeTinyConfig:
    LOCATIONS = {"output": "output"}  # paths (pipeline.submission)

    # "kind", not "variant": only t2v and i2v are G's variants (models/variants.py).
    kind: str = option(help="what to build: G of the t2v variant (ModelScope T2V layout) or the i2v variant "
                            "(I2VGen-XL layout); lgm: the tiny reconstructor; metrics: CLIP/RAFT/LPIPS weight files "
                            "for jobs/evaluate.py", choices=("t2v", "i2v", "lgm", "metrics"), deprecated_alias="variant")
    output: str = option(help="directory to write (must not exist, or be empty)")
    seed: int = option(0, "seed of the random weights")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, MakeTinyConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        config = config_from_args(MakeTinyConfig, args)
        if os.path.isdir(config.output) and os.listdir(config.output):
            raise ValueError(f"{config.output} exists and is not empty; choose another --output")
        import torch  # after parsing: --help stays quick

        from models.reconstructor.model import LGM
        from models.toy.tiny import make_tiny, make_tiny_evaluation_weights

        if config.kind == "lgm":
            torch.manual_seed(config.seed)
            LGM("tiny").save_pretrained(config.output)
        elif config.kind == "metrics":
            for name, path in make_tiny_evaluation_weights(config.output, seed=config.seed).items():
                print(f"  --{name.replace('_', '-')} {path}")
        else:
            make_tiny(config.kind, config.output, seed=config.seed)
        print(f"wrote tiny {config.kind} model to {config.output}")

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
