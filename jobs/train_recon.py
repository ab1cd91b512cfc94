"""Train the reconstructor (LGM) on the fine-tuned generator's one-step predictions, on Ray Train.

Locally (tiny models, CPU):
    python jobs/train_recon.py --data out/shards --model out/train/demo/final_model --output out/train \
        --name recon-demo --steps 20 --num-workers 2 --resolution 32 --global-batch 2 --precision no \
        --lgm-preset tiny --lgm-size 32 --supervised-views 4
On a cluster, starting from LGM's released weights:
    ray job submit --working-dir . -- python jobs/train_recon.py --data s3://bucket/shards \
        --model s3://... --output s3://bucket/train --name recon-v1 --lgm /models/model_fp16_fixrot.safetensors \
        --num-workers 8 --use-gpu --accelerator-type A100
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from models.lgm_options import PRESETS  # noqa: E402
from models.multiview_model import ModelDirectoryError  # noqa: E402
from pipeline.train_common import add_train_arguments, config_from_args  # noqa: E402
from pipeline.train_recon import ReconConfig, run_train_recon  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser, experiment="videomv-recon")
    parser.add_argument("--lgm", default=None,
                        help="LGM weights to start from: the official .safetensors or an LGM directory (optional)")
    parser.add_argument("--lgm-preset", choices=sorted(PRESETS), default="big", help="architecture (default big)")
    parser.add_argument("--lgm-size", type=int, default=None, help="override LGM input/output resolution")
    parser.add_argument("--supervised-views", type=int, default=24, help="views rendered and supervised (default 24)")
    parser.add_argument("--lpips-vgg", default=None, help="torchvision VGG16 weights (.pth) for the LPIPS term")
    parser.add_argument("--lpips-lin", default=None, help="lpips 'lin' weights (vgg.pth) for the LPIPS term")
    parser.set_defaults(lr=4e-4)  # LGM's learning rate
    args = parser.parse_args(argv)
    recon = ReconConfig(lgm=args.lgm, lgm_preset=args.lgm_preset, lgm_size=args.lgm_size,
                        supervised_views=args.supervised_views, lpips_vgg=args.lpips_vgg, lpips_lin=args.lpips_lin)
    if args.lgm and not os.path.exists(args.lgm):
        print(f"error: LGM weights not found: {args.lgm}", file=sys.stderr)
        return 2
    try:
        summary = run_train_recon(config_from_args(args), recon)
    except (ModelDirectoryError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"reconstructor training {summary.name} done: {summary.steps} steps, final loss "
          f"{summary.final_metrics.get('loss', float('nan')):.4f}, model at {summary.final_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
