"""Cost of rendering Gaussians: 24 views at 64/128/256 px over 4K/16K/65K Gaussians.

The PyTorch rasteriser (``render_gaussians(..., backend="torch")``) runs against its baseline, the
compositing as it was before issue 17 (``benchmarks/baseline_rasteriser.py``: whole tile lists at
once, no early termination), in the same run, with the ratio and the largest output difference;
gsplat runs too when CUDA is present. Scenes are random Gaussians in the unit cube with LGM-like
sizes (sigma 0.004-0.02), seen from a 24-view orbit at distance 2. ``--memory`` adds the peak
resident memory of one forward pass of each, measured in a fresh process.

    python benchmarks/gaussians.py [--device cpu|cuda] [--repeat 1] [--backward] [--cases 65536x256] [--memory]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import camera  # noqa: E402
from benchmarks.baseline_rasteriser import render_baseline  # noqa: E402
from models.gaussians.rendering import render_gaussians  # noqa: E402
from models.gaussians.gaussians import Gaussians  # noqa: E402


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


def render(implementation: str, gaussians: Gaussians, c2w: torch.Tensor, K: torch.Tensor, size: int) -> torch.Tensor:
    """Colors [C, H, W, 3] of "torch" (the current rasteriser), "baseline" or "gsplat"."""
    if implementation == "baseline":
        return render_baseline(gaussians, c2w, K, size, size)[0]
    return render_gaussians(gaussians, c2w, K, size, size, backend=implementation).colors


def peak_memory(implementation: str, count: int, size: int) -> float:
    """Peak resident memory (GiB) of a fresh process that renders one forward pass."""
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--cases", f"{count}x{size}",
                             "--peak-memory-of", implementation], capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def measure_peak_memory(implementation: str, count: int, size: int) -> None:
    """In this (fresh) process: one forward pass, then print the peak resident memory in GiB."""
    c2w = torch.tensor(camera.orbit_c2w(20.0), dtype=torch.float32)
    K = torch.tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, size, size), dtype=torch.float32)
    with torch.no_grad():
        render(implementation, scene(count, "cpu"), c2w, K, size)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--cases", nargs="*", default=None,
                        help="COUNTxSIZE cases, e.g. 65536x256 (default: 4K/16K/65K x 64/128/256)")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of one forward pass (CPU)")
    parser.add_argument("--peak-memory-of", default=None, help=argparse.SUPPRESS)  # the child process of --memory
    args = parser.parse_args()
    cases = ([tuple(int(v) for v in case.split("x")) for case in args.cases] if args.cases else
             [(count, size) for count in (4096, 16384, 65536) for size in (64, 128, 256)])
    if args.peak_memory_of:
        measure_peak_memory(args.peak_memory_of, *cases[0])
        return 0
    c2w = torch.tensor(camera.orbit_c2w(20.0), dtype=torch.float32, device=args.device)
    implementations = ["baseline", "torch"] + (["gsplat"] if args.device == "cuda" else [])
    print(f"device {args.device}, {torch.get_num_threads()} threads, 24 views, "
          f"{'forward+backward' if args.backward else 'forward'}, best of {args.repeat}")
    print(f"{'gaussians':>9} {'size':>5} " + " ".join(f"{name + ' s':>11}" for name in implementations)
          + f" {'baseline/torch':>14} {'max |diff|':>10}" + (" peak GiB baseline / torch" if args.memory else ""))
    for count, size in cases:
        gaussians = scene(count, args.device)
        if args.backward:
            for tensor in (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors):
                tensor.requires_grad_(True)
        K = torch.tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, size, size), dtype=torch.float32,
                         device=args.device)
        seconds, images = [], {}
        for implementation in implementations:
            def run() -> None:
                with torch.set_grad_enabled(args.backward):
                    colors = render(implementation, gaussians, c2w, K, size)
                    if args.backward:
                        colors.mean().backward()
                images[implementation] = colors.detach()

            seconds.append(timed(run, args.repeat, args.device))
        difference = (images["baseline"] - images["torch"]).abs().max().item()
        memory = (f" {peak_memory('baseline', count, size):>8.2f} / {peak_memory('torch', count, size):.2f}"
                  if args.memory else "")
        print(f"{count:>9} {size:>5} " + " ".join(f"{s:>11.3f}" for s in seconds)
              + f" {seconds[0] / seconds[1]:>14.2f} {difference:>10.1e}" + memory, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
