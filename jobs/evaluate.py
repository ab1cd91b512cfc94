r"""Evaluate a multi-view model with the paper's protocol, 3D-aware sampling on and off side by side.

Text-to-multi-view (24 views per prompt; Gaussians fitted on the 12 even views, PSNR/SSIM/LPIPS on
the 12 odd ones, CLIP score, flow-warping RMSE at intervals 1 and 6):
    python jobs/evaluate.py --model out/runs/finetune/final_model --reconstructor out/runs/reconstructor/final_model \
        --prompts assets/eval_prompts.txt --clip /models/clip-vit-large-patch14 --raft /models/raft-things.pth \
        --lpips-vgg /models/vgg16-397923af.pth        # LPIPS lin weights: torchmetrics' bundled copy
Image-to-multi-view (condition on view 0 of held-out renders, compare with the other 23):
    python jobs/evaluate.py --model /models/videomv-i2v --reconstructor /models/model_fp16_fixrot.safetensors \
        --shards s3://bucket/held-out-shards --max-samples 50 ...
On a cluster: ray job submit --entrypoint-num-gpus 1 --working-dir . -- python jobs/evaluate.py ...

Metric weights are read from local paths only; a metric whose weights are not given is left out.
Prints the table and logs everything to MLflow (experiment videomv-eval by default).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args  # noqa: E402
from pipeline.evaluation.config import EvaluationConfig  # noqa: E402

logger = logging.getLogger("jobs.evaluate")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, EvaluationConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.evaluation.protocol import evaluate  # after parsing: --help stays quick

    def work() -> None:
        print(evaluate(config_from_args(EvaluationConfig, args)).table())  # the job's result, on stdout

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
