"""Cost of rendering Gaussians: 24 views at 64/128/256 px over 4K/16K/65K Gaussians.

The PyTorch rasteriser always runs (CPU, or the GPU's torch path with --device cuda); gsplat runs
when CUDA is present, and the ratio between the two is printed. Scenes are random Gaussians in the
unit cube with LGM-like sizes (sigma 0.004-0.02), seen from a 24-view orbit at distance 2.

    python benchmarks/gaussians.py [--device cpu|cuda] [--repeat 1] [--backward]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import camera  # noqa: E402
from models.gaussian_renderer import render_gaussians  # noqa: E402
from models.gaussians import Gaussians  # noqa: E402


def scene(count: int, device: str) -> Gaussians:
    generator = torch.Generator().manual_seed(0)
    return Gaussians(
        means=torch.rand(count, 3, generator=generator) - 0.5,
        quats=torch.nn.functional.normalize(torch.randn(count, 4, generator=generator), dim=-1),
        scales=torch.rand(count, 3, generator=generator) * 0.016 + 0.004,
        opacities=torch.rand(count, generator=generator) * 0.8 + 0.1,
        colors=torch.rand(count, 3, generator=generator),
    ).to(device)


def timed(function, repeat: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    args = parser.parse_args()
    c2w = torch.tensor(camera.orbit_c2w(20.0), dtype=torch.float32, device=args.device)
    backends = ["torch"] + (["gsplat"] if args.device == "cuda" else [])
    print(f"device {args.device}, {torch.get_num_threads()} threads, 24 views, "
          f"{'forward+backward' if args.backward else 'forward'}, best of {args.repeat}")
    print(f"{'gaussians':>9} {'size':>5} " + " ".join(f"{b + ' s':>10}" for b in backends) +
          (f" {'torch/gsplat':>12}" if len(backends) == 2 else ""))
    for count in (4096, 16384, 65536):
        gaussians = scene(count, args.device)
        if args.backward:
            for tensor in (gaussians.means, gaussians.scales, gaussians.opacities, gaussians.colors):
                tensor.requires_grad_(True)
        for size in (64, 128, 256):
            K = torch.tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, size, size), dtype=torch.float32,
                             device=args.device)
            seconds = []
            for backend in backends:
                def run() -> None:
                    out = render_gaussians(gaussians, c2w, K, size, size, backend=backend)
                    if args.backward:
                        out.colors.mean().backward()

                seconds.append(timed(run, args.repeat, args.device))
            ratio = f" {seconds[0] / seconds[1]:>12.1f}" if len(seconds) == 2 else ""
            print(f"{count:>9} {size:>5} " + " ".join(f"{s:>10.3f}" for s in seconds) + ratio, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
