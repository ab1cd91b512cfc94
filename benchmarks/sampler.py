"""Wall time of plain DDIM against 3D-aware sampling (both forms), in one run, as ratios.

    python benchmarks/sampler.py [--num-inference-steps 50] [--model DIR --reconstructor PATH]

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
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402

from models.reconstructor.model import LGM  # noqa: E402
from models.pipeline_videomv.pipeline_videomv import load_pipeline  # noqa: E402
from models.pipeline_videomv.three_d_aware import reconstruction_steps  # noqa: E402
from models.toy.tiny import make_tiny  # noqa: E402
from pipeline.cli import StoreWithDeprecatedAlias  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-inference-steps", "--steps", type=int, default=50, action=StoreWithDeprecatedAlias,
                        alias="--steps", help="DDIM steps (--steps is its deprecated old name)")
    parser.add_argument("--model", default=None, help="diffusers directory of G (default: a tiny t2v model)")
    parser.add_argument("--reconstructor", default=None, help="LGM directory or official safetensors (default: tiny)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N rounds (each round runs every case)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or make_tiny("t2v", os.path.join(scratch, "t2v"))
        if args.reconstructor:
            lgm = LGM.load(args.reconstructor)
        else:
            torch.manual_seed(0)
            lgm = LGM("tiny")
        pipe = load_pipeline(model_dir, lgm, device)
        pipe.set_progress_bar_config(disable=True)
        model = pipe
        condition = ({"prompt": "a red ceramic coffee mug, 3d asset"} if model.variant == "t2v"
                     else {"image": torch.zeros(1, 3, 256, 256, device=device)})
        at = reconstruction_steps(args.num_inference_steps)
        cases = [("plain DDIM", {}), ("3D-aware, one reconstruction per step", {"three_d_aware": at,
                                                                                 "three_d_aware_mode": "one"}),
                 ("3D-aware, two reconstructions (authors)", {"three_d_aware": at, "three_d_aware_mode": "two"})]
        # Rounds of every case in turn, the best of each case kept: a slow spell of the machine
        # then costs every case alike instead of whichever ran during it.
        best = {name: float("inf") for name, _ in cases}
        counts = {}
        for _ in range(args.repeat):
            for name, options in cases:
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                # The final reconstruction (Gaussians from the finished views) is part of every case.
                result = pipe(**condition, **options, num_inference_steps=args.num_inference_steps, output_type="pt",
                              generator=torch.Generator().manual_seed(0))
                if device == "cuda":
                    torch.cuda.synchronize()
                best[name], counts[name] = min(best[name], time.perf_counter() - start), result.reconstructions
        timings = [(name, best[name], counts[name]) for name, _ in cases]
    base = timings[0][1]
    print(f"{model.variant} model {'(tiny)' if not args.model else model_dir}, {args.num_inference_steps} DDIM steps, "
          f"guidance on, device {device}, reconstruction at steps {list(at)}")
    for name, seconds, count in timings:
        print(f"{name:42s} {seconds:7.2f} s  x{seconds / base:.2f}  ({count} reconstructions + 1 final)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
