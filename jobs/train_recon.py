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

from pipeline.disk import log_if_disk_full  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from models.locations import is_remote  # noqa: E402
from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.train.config import RECON_TRAIN_DEFAULTS, ReconConfig, TrainConfig  # noqa: E402

logger = logging.getLogger("jobs.train_recon")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, TrainConfig, defaults=RECON_TRAIN_DEFAULTS, exclude=TrainConfig.FINETUNE_ONLY)
    add_config_arguments(parser, ReconConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.pipeline_videomv.loading import ModelDirectoryError  # after parsing: --help stays quick
    from pipeline.train.reconstructor import run_train_recon

    if args.reconstructor and not is_remote(args.reconstructor) and not os.path.exists(args.reconstructor):  # remote ones are fetched by the workers
        logger.error("LGM weights not found: %s", args.reconstructor)
        return 2
    try:
        recon = config_from_args(ReconConfig, args)
        summary = run_train_recon(config_from_args(TrainConfig, args), recon)
    except (ModelDirectoryError, ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    except Exception as error:  # a full disk is one line, whatever wrapped it on the way (Ray, a worker)
        if not log_if_disk_full(error, logger):
            raise
        return 1
    logger.info("reconstructor training %s done: %d steps, final loss %.4f, model at %s", summary.name,
                summary.steps, summary.final_metrics.get("loss", float("nan")), summary.final_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
