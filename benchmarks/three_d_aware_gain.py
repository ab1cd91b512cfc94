"""3D-aware denoising vs plain DDIM on the trained miniature (issue 14), the paper's protocol.

    make run                                   # the main job: out/runs/{finetune,reconstructor}
    python benchmarks/three_d_aware_gain.py --json out/three_d_aware.json [--model DIR --reconstructor DIR]

Renders-vs-x0 at t = 581, 381, 181 on held-out Blender orbits, then plain DDIM, the authors'
two-reconstruction form and the one-reconstruction form with the same seeds: 12/12 Gaussian-fit
PSNR/SSIM/LPIPS, flow-warping RMSE (intervals 1 and 6), PSNR against Blender's truth, seconds per
sample (pipeline/experiments/three_d_aware_gain.py). LPIPS and flow need --lpips-vgg/--lpips-lin and --raft weights;
without them those figures are null. Prints Markdown tables; docs/results.md has them.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

from pipeline.experiments.three_d_aware_gain import ThreeDAwareConfig, format_table, run_three_d_aware  # noqa: E402
from pipeline.experiments.command import run_experiment  # noqa: E402


def main() -> int:
    return run_experiment(__doc__, ThreeDAwareConfig, run_three_d_aware, format_table)


if __name__ == "__main__":
    sys.exit(main())
