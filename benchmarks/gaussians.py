"""Cost of rendering Gaussians: 24 views at 64/128/256 px over 4K/16K/65K Gaussians, and the
evaluation fit's step.

The "torch" backend (``render_gaussians(..., backend="torch")``: gsplat's per-pixel kernels compiled
by numba for CPU tensors) runs against its baseline, the tensor compositing it used on every device
until 2026-12-06 and still uses off the CPU (``_torch_rasterizer._render_torch``, one view at a
time), in the same run, with the ratio and the largest output difference; gsplat runs too when
CUDA is present. Scenes are random Gaussians in the unit cube with LGM-like sizes (sigma
0.004-0.02), seen from a 24-view orbit at distance 2. ``--memory`` adds the peak resident memory of
one forward pass of each, measured in a fresh process. ``--fit-step`` times instead one step of the
evaluation's Gaussian fit (``models.gaussians.fit``: its default 8,192 Gaussians, 4 views, L1 +
SSIM, forward and backward) at each size of ``--cases`` (the count is ignored).

    python benchmarks/gaussians.py [--device cpu|cuda] [--repeat 1] [--backward] [--cases 65536x256] [--memory]
    python benchmarks/gaussians.py --fit-step --cases 0x128 0x256 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from typing import Callable

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402

import camera  # noqa: E402
from models.gaussians._torch_rasterizer import _render_torch  # noqa: E402
from models.gaussians.fit import SSIM_WEIGHT, FitConfig, random_gaussians  # noqa: E402
from models.gaussians.gaussians import Gaussians  # noqa: E402
from models.gaussians.rendering import render_gaussians  # noqa: E402
from models.metrics.image import ssim  # noqa: E402


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


def render_baseline(gaussians: Gaussians, c2w: torch.Tensor, K: torch.Tensor, size: int,
                    background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Colors [C, H, W, 3] and alphas [C, H, W, 1] by the tensor compositing, view after view (as
    ``render_gaussians`` rendered CPU tensors before 2026-12-06)."""
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, device=c2w.device, dtype=c2w.dtype)
    viewmats = torch.linalg.inv(c2w @ flip)
    outputs = [_render_torch(gaussians, viewmat, K, size, size, torch.tensor(background, device=c2w.device))
               for viewmat in viewmats]
    return torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])


def render(implementation: str, gaussians: Gaussians, c2w: torch.Tensor, K: torch.Tensor, size: int,
           background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Colors [C, H, W, 3] and alphas of "torch" (the current rasteriser), "baseline" or "gsplat"."""
    if implementation == "baseline":
        return render_baseline(gaussians, c2w, K, size, background)
    output = render_gaussians(gaussians, c2w, K, size, size, background, backend=implementation)
    return output.colors, output.alphas


def fit_step(implementation: str, size: int, device: str) -> tuple[Callable[[], None], Callable[[], torch.Tensor]]:
    """One step of the evaluation fit (``fit_gaussians``' loss on 4 of 24 orbit views of a blurred
    random image, forward and backward) as a function, and one that returns the last colours."""
    config = FitConfig()
    start = random_gaussians(config.num_gaussians, config.radius, config.seed).to(device)
    raw = {name: getattr(start, name).clone().requires_grad_(True) for name in
           ("means", "quats", "scales", "opacities", "colors")}
    generator = torch.Generator().manual_seed(0)
    target = torch.nn.functional.avg_pool2d(torch.rand(config.views_per_step, 3, size, size, generator=generator),
                                            9, 1, 4).to(device)
    c2w = torch.tensor(camera.orbit_c2w(20.0), dtype=torch.float32, device=device)[:: 24 // config.views_per_step]
    K = torch.tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, size, size), dtype=torch.float32,
                     device=device)
    last = {}

    def step() -> None:
        gaussians = Gaussians(**raw)
        colors, alphas = render(implementation, gaussians, c2w, K, size, (1.0, 1.0, 1.0))
        rendered = colors.permute(0, 3, 1, 2)
        loss = (1 - SSIM_WEIGHT) * (rendered - target).abs().mean() + SSIM_WEIGHT * (1 - ssim(rendered, target).mean())
        for tensor in raw.values():
            tensor.grad = None
        loss.backward()
        last["colors"] = colors.detach()

    return step, lambda: last["colors"]


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
    parser.add_argument("--fit-step", action="store_true",
                        help="time one step of the evaluation fit at each --cases size instead")
    parser.add_argument("--peak-memory-of", default=None, help=argparse.SUPPRESS)  # the child process of --memory
    args = parser.parse_args()
    cases = ([tuple(int(v) for v in case.split("x")) for case in args.cases] if args.cases else
             [(count, size) for count in (4096, 16384, 65536) for size in (64, 128, 256)])
    if args.peak_memory_of:
        measure_peak_memory(args.peak_memory_of, *cases[0])
        return 0
    c2w = torch.tensor(camera.orbit_c2w(20.0), dtype=torch.float32, device=args.device)
    implementations = ["baseline", "torch"] + (["gsplat"] if args.device == "cuda" else [])
    # Compile (or load from numba's cache) the CPU kernels before any timing: once per process.
    warm = scene(64, args.device)
    warm.means.requires_grad_(True)
    render("torch", warm, c2w[:2], torch.eye(3, device=args.device) * 16, 16)[0].sum().backward()
    if args.fit_step:
        print(f"device {args.device}, {torch.get_num_threads()} threads, the evaluation fit's step "
              f"(forward+backward), best of {args.repeat}")
        print(f"{'size':>5} " + " ".join(f"{name + ' s':>11}" for name in implementations)
              + f" {'baseline/torch':>14} {'max |diff|':>10}")
        for _, size in cases:
            seconds, images = [], {}
            for implementation in implementations:
                step, colors = fit_step(implementation, size, args.device)
                seconds.append(timed(step, args.repeat, args.device))
                images[implementation] = colors()
            difference = (images["baseline"] - images["torch"]).abs().max().item()
            print(f"{size:>5} " + " ".join(f"{s:>11.3f}" for s in seconds)
                  + f" {seconds[0] / seconds[1]:>14.2f} {difference:>10.1e}", flush=True)
        return 0
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
                    colors = render(implementation, gaussians, c2w, K, size)[0]
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
