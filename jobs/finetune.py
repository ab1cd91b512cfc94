r"""Fine-tune the multi-view generator on orbit shards with Ray Train.

Locally (tiny model, CPU):
    python jobs/make_tiny.py --kind t2v --output out/tiny-t2v
    python jobs/finetune.py --data out/shards --model out/tiny-t2v --output out/train --name demo \
        --steps 20 --num-workers 2 --resolution 32 --global-batch 2 --precision no
On a cluster of A100s:
    ray job submit --working-dir . -- python jobs/finetune.py --data s3://bucket/shards \
        --model /models/text-to-video-ms-1.7b --output s3://bucket/train --name t2v-v1 \
        --num-workers 8 --use-gpu --accelerator-type A100 --steps 2000
Re-submitting with the same --name and --output resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args  # noqa: E402
from pipeline.train.config import TrainConfig  # noqa: E402

logger = logging.getLogger("jobs.finetune")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, (TrainConfig, {"defaults": {"experiment": "videomv-finetune"}}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.train.finetune import run_finetune  # after parsing: --help stays quick

    def work() -> None:
        summary = run_finetune(config_from_args(TrainConfig, args))
        logger.info("fine-tuning %s done: %d steps, final loss %.4f, model at %s", summary.name, summary.steps,
                    summary.final_metrics.get("loss", float("nan")), summary.final_model)

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
