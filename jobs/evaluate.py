"""Evaluate a multi-view model with the paper's protocol, 3D-aware sampling on and off side by side.

Text-to-multi-view (24 views per prompt; Gaussians fitted on the 12 even views, PSNR/SSIM/LPIPS on
the 12 odd ones, CLIP score, flow-warping RMSE at intervals 1 and 6):
    python jobs/evaluate.py --model out/runs/finetune/final_model --reconstructor out/runs/reconstructor/final_model \
        --prompts assets/eval_prompts.txt --clip /models/clip-vit-large-patch14 --raft /models/raft-things.pth \
        --lpips-vgg /models/vgg16-397923af.pth --lpips-lin /models/lpips/vgg.pth
Image-to-multi-view (condition on view 0 of held-out renders, compare with the other 23):
    python jobs/evaluate.py --model /models/videomv-i2v --reconstructor /models/model_fp16_fixrot.safetensors \
        --shards s3://bucket/held-out-shards --max-samples 50 ...
On a cluster: ray job submit --entrypoint-num-gpus 1 --working-dir . -- python jobs/evaluate.py ...

Metric weights are read from local paths only; a metric whose weights are not given is left out.
Prints the table and logs everything to MLflow (experiment videomv-eval by default).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from models.gaussian_fit import FitConfig  # noqa: E402
from models.multiview_model import ModelDirectoryError  # noqa: E402
from pipeline.evaluate import SETTINGS, EvaluationConfig, evaluate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="diffusers-layout directory of the multi-view model")
    parser.add_argument("--reconstructor", default=None, help="LGM directory or official .safetensors (3d-aware)")
    parser.add_argument("--prompts", default=None, help="text-to-MV: prompt file, one prompt per line")
    parser.add_argument("--shards", default=None, help="image-to-MV: held-out orbit shards")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N prompts/objects")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        help="sampling settings to compare (default: both)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--schedule", choices=("authors", "every"), default="authors",
                        help="3D-aware reconstruction steps (default: the authors' 20/30/40 of 50)")
    parser.add_argument("--mode", choices=("two", "one"), default="two", help="3D-aware form (default two)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sample 0 (sample i uses seed + i)")
    parser.add_argument("--fit-steps", type=int, default=FitConfig.steps, help="Gaussian fitting steps")
    parser.add_argument("--fit-gaussians", type=int, default=FitConfig.num_gaussians, help="Gaussians fitted")
    parser.add_argument("--clip", default=None, help="local Hugging Face CLIP directory (CLIP score)")
    parser.add_argument("--raft", default=None, help="RAFT checkpoint, e.g. raft-things.pth (flow-warping RMSE)")
    parser.add_argument("--raft-iterations", type=int, default=12, help="RAFT update iterations (default 12)")
    parser.add_argument("--lpips-vgg", default=None, help="torchvision VGG16 weights (.pth) for LPIPS")
    parser.add_argument("--lpips-lin", default=None, help="lpips 'lin' weights (vgg.pth) for LPIPS")
    parser.add_argument("--output", default=None, help="also write results.csv and table.md here")
    parser.add_argument("--experiment", default="videomv-eval", help="MLflow experiment")
    parser.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    args = parser.parse_args(argv)
    config = EvaluationConfig(
        model=args.model, reconstructor=args.reconstructor, prompts=args.prompts, shards=args.shards,
        max_samples=args.max_samples, settings=tuple(args.settings), steps=args.steps, schedule=args.schedule,
        mode=args.mode, seed=args.seed, fit=FitConfig(steps=args.fit_steps, num_gaussians=args.fit_gaussians),
        lpips_vgg=args.lpips_vgg, lpips_lin=args.lpips_lin, clip=args.clip, raft=args.raft,
        raft_iterations=args.raft_iterations, output=args.output, experiment=args.experiment,
        mlflow_uri=args.mlflow_uri, run_name=args.run_name,
    )
    try:
        result = evaluate(config)
    except (ModelDirectoryError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
