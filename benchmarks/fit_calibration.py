"""Calibration of the evaluation's 12/12 Gaussian fit on Blender ground truth (issue 14).

    python benchmarks/fit_calibration.py [--resolution 256] [--steps 300] [--num-gaussians 8192]

Renders a bundled object's orbit with every view's azimuth jittered by 0, 2, 5 and 10 degrees,
fits Gaussians to the 12 even views at the nominal cameras and scores the 12 odd ones
(pipeline/experiments/fit_calibration.py). Prints PSNR/SSIM per jitter and the fit's seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

from models.gaussians.fit import FitConfig  # noqa: E402
from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.experiments.fit_calibration import fit_calibration  # noqa: E402
from pipeline.data.sources import BUNDLED_ASSETS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asset", default=os.path.join(BUNDLED_ASSETS, "Duck.glb"))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    parser.add_argument("--jitters", type=float, nargs="+", default=[0.0, 2.0, 5.0, 10.0])
    add_config_arguments(parser, FitConfig)
    args = parser.parse_args()
    fit = config_from_args(FitConfig, args)
    rows = fit_calibration(args.asset, args.resolution, tuple(args.jitters), fit, samples=args.samples)
    print(f"{os.path.basename(args.asset)}, {args.resolution} px, fit: "
          + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(fit).items()))
    print("| azimuth jitter | 12/12 PSNR | SSIM | fit seconds |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row.jitter_deg:g} deg | {row.psnr:.2f} dB | {row.ssim:.3f} | {row.seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
