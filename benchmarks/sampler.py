"""Wall time of plain DDIM against 3D-aware sampling (both forms), in one run, as ratios.

    python benchmarks/sampler.py [--steps 50] [--model DIR --lgm PATH]

Without --model it uses freshly built tiny models (CPU-sized); with a real model directory and LGM
weights it measures the real thing (use a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from models.lgm import LGM  # noqa: E402
from models.multiview_model import MultiViewModel  # noqa: E402
from models.sampler import SamplingConfig, reconstruction_steps, sample_views  # noqa: E402
from models.tiny import make_tiny  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--model", default=None, help="diffusers directory of G (default: a tiny t2v model)")
    parser.add_argument("--lgm", default=None, help="LGM directory or official safetensors (default: tiny)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or make_tiny("t2v", os.path.join(scratch, "t2v"))
        model = MultiViewModel.from_pretrained(model_dir).to(device)
        model.freeze_encoders()
        if args.lgm:
            lgm = LGM.load(args.lgm)
        else:
            torch.manual_seed(0)
            lgm = LGM("tiny")
        lgm = lgm.to(device).eval()
        prompt = ["a red ceramic coffee mug, 3d asset"] if model.variant == "t2v" else None
        images = None if prompt else torch.zeros(1, 3, 256, 256, device=device)
        at = reconstruction_steps(args.steps)
        cases = [("plain DDIM", SamplingConfig(steps=args.steps)),
                 ("3D-aware, one reconstruction per step", SamplingConfig(steps=args.steps, reconstruct_at=at, mode="one")),
                 ("3D-aware, two reconstructions (authors)", SamplingConfig(steps=args.steps, reconstruct_at=at, mode="two"))]
        timings = []
        for name, config in cases:
            best, count = float("inf"), 0
            for _ in range(args.repeat):
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                # The final reconstruction (Gaussians from the finished views) is part of every case.
                result = sample_views(model, prompts=prompt, images=images, config=config, reconstructor=lgm)
                if device == "cuda":
                    torch.cuda.synchronize()
                best, count = min(best, time.perf_counter() - start), result.reconstructions
            timings.append((name, best, count))
    base = timings[0][1]
    print(f"{model.variant} model {'(tiny)' if not args.model else model_dir}, {args.steps} DDIM steps, "
          f"guidance on, device {device}, reconstruction at steps {list(at)}")
    for name, seconds, count in timings:
        print(f"{name:42s} {seconds:7.2f} s  x{seconds / base:.2f}  ({count} reconstructions + 1 final)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
