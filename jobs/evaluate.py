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

from pipeline.logs import configure_logging  # noqa: E402

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.evaluation.config import EvaluationConfig  # noqa: E402

logger = logging.getLogger("jobs.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, EvaluationConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.pipeline_videomv.loading import ModelDirectoryError  # after parsing: --help stays quick
    from pipeline.evaluation.protocol import evaluate

    try:
        result = evaluate(config_from_args(EvaluationConfig, args))
    except (ModelDirectoryError, ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    print(result.table())  # the job's result, on stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
