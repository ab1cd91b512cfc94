"""Fine-tune the multi-view generator on orbit shards with Ray Train.

Locally (tiny model, CPU):
    python jobs/make_tiny.py --variant t2v --output out/tiny-t2v
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
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from models.multiview_model import ModelDirectoryError  # noqa: E402
from pipeline.finetune import run_finetune  # noqa: E402
from pipeline.train_common import add_train_arguments, config_from_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser, experiment="videomv-finetune")
    parser.add_argument("--image-data", default=None,
                        help="optional Parquet of 2D images (columns image, caption) mixed in as 1-frame videos")
    parser.add_argument("--image-ratio", type=float, default=0.0, help="share of micro-batches taken from --image-data")
    parser.add_argument("--sample-every", type=int, default=0, help="steps between sampled-view grids in MLflow (0: off)")
    parser.add_argument("--sample-steps", type=int, default=25, help="DDIM steps of those samples")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, image_data=args.image_data, image_ratio=args.image_ratio,
                                  sample_every=args.sample_every, sample_steps=args.sample_steps)
        summary = run_finetune(config)
    except (ModelDirectoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"fine-tuning {summary.name} done: {summary.steps} steps, final loss "
          f"{summary.final_metrics.get('loss', float('nan')):.4f}, model at {summary.final_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
