"""What one text-to-multi-view evaluation sample costs, part by part, in one run.

    python benchmarks/evaluation_cost.py [--steps 50] [--fit-steps 300] [--fit-gaussians 8192]
        [--model DIR --reconstructor PATH --clip DIR --raft FILE --lpips-vgg FILE --lpips-lin FILE]

Without paths it uses tiny G and reconstructor and random metric weights in the published layouts
(RAFT and LPIPS are full-size networks either way; the tiny CLIP is not). Prints seconds per part
and each part's share of the sample.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402

import camera  # noqa: E402
from models.metrics.scores import MetricNetworks, consistency_scores, image_scores  # noqa: E402
from models.gaussians.fit import FitConfig, fit_gaussians  # noqa: E402
from models.gaussians.rendering import render_batch  # noqa: E402
from models.reconstructor.model import LGM  # noqa: E402
from models.pipeline_videomv.pipeline_videomv import load_pipeline  # noqa: E402
from models.pipeline_videomv.three_d_aware import reconstruction_steps  # noqa: E402
from models.variants import VARIANTS  # noqa: E402
from models.toy.tiny import make_tiny, make_tiny_evaluation_weights  # noqa: E402


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--fit-steps", type=int, default=FitConfig.steps)
    parser.add_argument("--fit-gaussians", type=int, default=FitConfig.num_gaussians)
    parser.add_argument("--raft-iterations", type=int, default=12)
    for name in ("model", "reconstructor", "clip", "raft", "lpips-vgg", "lpips-lin"):
        parser.add_argument(f"--{name}", default=None)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        weights = make_tiny_evaluation_weights(os.path.join(scratch, "metrics"))
        model_dir = args.model or make_tiny("t2v", os.path.join(scratch, "t2v"))
        if args.reconstructor is None:
            torch.manual_seed(0)
            LGM("tiny").save_pretrained(os.path.join(scratch, "lgm"))
        pipe = load_pipeline(model_dir, args.reconstructor or os.path.join(scratch, "lgm"), device)
        pipe.set_progress_bar_config(disable=True)
        networks = MetricNetworks.from_paths(args.lpips_vgg or weights["lpips_vgg"], args.lpips_lin or weights["lpips_lin"],
                                             args.clip or weights["clip"], args.raft or weights["raft"],
                                             args.raft_iterations).to(device)
        prompt = "a wooden chair, 3d asset"
        parts: dict[str, float] = {}
        plain, parts["sample, plain DDIM"] = timed(lambda: pipe(
            prompt=prompt, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
            output_type="pt"))
        _, parts["sample, 3D-aware (authors)"] = timed(lambda: pipe(
            prompt=prompt, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
            three_d_aware=reconstruction_steps(args.steps, "authors"), output_type="pt"))
        views, c2w = plain.frames[0], torch.from_numpy(plain.cameras[0]).to(plain.frames.device)
        background = VARIANTS["t2v"].background
        fitted, parts["Gaussian fit on 12 views"] = timed(lambda: fit_gaussians(
            views[0::2], c2w[0::2], camera.DEFAULT_FOV_DEG, background,
            FitConfig(steps=args.fit_steps, num_gaussians=args.fit_gaussians)))
        rendered, parts["render 12 held-out views"] = timed(lambda: render_batch(
            fitted.as_batch(), c2w[1::2][None], camera.DEFAULT_FOV_DEG, views.shape[-1], background)[0][0])
        _, parts["PSNR + SSIM + LPIPS"] = timed(lambda: image_scores(rendered.clamp(0, 1), views[1::2], networks.lpips))
        _, parts["CLIP score (24 views)"] = timed(lambda: networks.clip.score(prompt, views))
        _, parts["flow-warping RMSE (RAFT, 23 + 18 pairs)"] = timed(lambda: consistency_scores(views, networks))
    evaluation = sum(seconds for name, seconds in parts.items() if not name.startswith("sample"))
    print(f"device {device}; {views.shape[-1]} px views; {args.steps} DDIM steps; fit {args.fit_steps} steps x "
          f"{args.fit_gaussians} Gaussians; RAFT {args.raft_iterations} iterations")
    for name, seconds in parts.items():
        share = "" if name.startswith("sample") else f"  ({100 * seconds / evaluation:.0f}% of scoring)"
        print(f"{name:42s} {seconds:8.2f} s{share}")
    print(f"{'scoring one sample (after sampling)':42s} {evaluation:8.2f} s")
    print(f"{'one prompt, both settings':42s} "
          f"{parts['sample, plain DDIM'] + parts['sample, 3D-aware (authors)'] + 2 * evaluation:8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
