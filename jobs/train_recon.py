r"""Train the reconstructor (LGM) on the fine-tuned generator's one-step predictions, on Ray Train.

Locally (tiny models, CPU):
    python jobs/train_recon.py --data out/shards --model out/train/demo/final_model --output out/train \
        --name recon-demo --steps 20 --num-workers 2 --resolution 32 --global-batch 2 --precision no \
        --lgm-preset tiny --lgm-size 32 --supervised-views 4
On a cluster, starting from LGM's released weights:
    ray job submit --working-dir . -- python jobs/train_recon.py --data s3://bucket/shards \
        --model s3://... --output s3://bucket/train --name recon-v1 --reconstructor /models/model_fp16_fixrot.safetensors \
        --num-workers 8 --use-gpu --accelerator-type A100
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from models.locations import is_remote  # noqa: E402
from pipeline.cli import config_from_args  # noqa: E402
from pipeline.train.config import RECON_TRAIN_DEFAULTS, ReconConfig, TrainConfig  # noqa: E402

logger = logging.getLogger("jobs.train_recon")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, (TrainConfig, {"defaults": RECON_TRAIN_DEFAULTS, "exclude": TrainConfig.FINETUNE_ONLY}),
                      ReconConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.train.reconstructor import run_train_recon  # after parsing: --help stays quick

    def work() -> None:
        recon = config_from_args(ReconConfig, args)
        if recon.reconstructor and not is_remote(recon.reconstructor) and not os.path.exists(recon.reconstructor):
            raise FileNotFoundError(f"LGM weights not found: {recon.reconstructor}")  # remote ones: the workers fetch
        summary = run_train_recon(config_from_args(TrainConfig, args), recon)
        logger.info("reconstructor training %s done: %d steps, final loss %.4f, model at %s", summary.name,
                    summary.steps, summary.final_metrics.get("loss", float("nan")), summary.final_model)

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
