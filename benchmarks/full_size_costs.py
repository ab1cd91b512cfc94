"""3D-aware sampling at full size, worked out without a GPU: FLOPs of every piece, then an estimate.

Counts the floating-point operations (``torch.utils.flop_counter``, matrix products and
convolutions, which are nearly all of the work) of one forward of each full-size network, built
from its published config inside ``FakeTensorMode`` (shapes only, no memory, no compute):
- G's UNet: ModelScope T2V (``benchmarks.full_size.MODELSCOPE_T2V_UNET``) with the camera
  embedding, 24 views at 256x256 (latents 4x24x32x32), one pass per guidance branch;
- the VAE (Stable Diffusion's AutoencoderKL, which ModelScope T2V uses): decode and encode one view;
- the reconstructor: LGM "big" (the official checkpoint's network), 4 views at 256x256.

Then, per 50-step DDIM sample with guidance (two UNet passes a step), the extra work of one
3D-aware step (decode the 4 input views, LGM, re-encode the 24 rendered views; rendering the
Gaussians with gsplat is not a matrix product and is added as a time) and the ratio of 3D-aware
to plain sampling for both forms at the authors' three steps. The ratio of FLOPs is the ratio of
times when every piece runs at the same efficiency on the GPU; the H100 times assume ``--tflops``
of sustained fp16 throughput (default 400, about 40 % of an H100 SXM's dense fp16 peak).

    python benchmarks/full_size_costs.py [--tflops 400] [--gsplat-ms 5]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.full_size import MODELSCOPE_T2V_VAE, build_unet  # noqa: E402
from models.reconstructor.model import LGM  # noqa: E402
from models.pipeline_videomv.three_d_aware import AUTHORS_STEPS  # noqa: E402

STEPS = 50
VIEWS = 24
RECONSTRUCTOR_VIEWS = 4


def flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def count() -> dict[str, int]:
    """FLOPs of one forward: "unet" (24 views, one guidance branch), "vae_decode" and
    "vae_encode" (one view), "lgm" (4 views)."""
    previous = torch.get_default_dtype()
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        unet = build_unet(torch.float16).eval()
        torch.set_default_dtype(torch.float16)
        try:
            vae = AutoencoderKL(**MODELSCOPE_T2V_VAE).eval()
            lgm = LGM("big").eval()
        finally:
            torch.set_default_dtype(previous)
        latents = torch.randn(1, 4, VIEWS, 32, 32, dtype=torch.float16)
        inputs = {"sample": latents, "timestep": torch.tensor([500]), "cameras": torch.randn(1, VIEWS, 4, 4),
                  "encoder_hidden_states": torch.randn(1, 77, 1024, dtype=torch.float16)}
        view = torch.randn(1, 3, 256, 256, dtype=torch.float16)
        latent = torch.randn(1, 4, 32, 32, dtype=torch.float16)
        lgm_inputs = torch.randn(1, RECONSTRUCTOR_VIEWS, 9, 256, 256, dtype=torch.float16)
        return {
            "unet": flops(lambda: unet(**inputs)),
            "vae_decode": flops(lambda: vae.decode(latent)),
            "vae_encode": flops(lambda: vae.encode(view)),
            "lgm": flops(lambda: lgm(lgm_inputs)),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, default=400.0, help="sustained fp16 TFLOP/s assumed for the GPU")
    parser.add_argument("--gsplat-ms", type=float, default=5.0,
                        help="gsplat's time to render 65,536 Gaussians at 24 views of 256 px (ms)")
    args = parser.parse_args()
    cost = count()
    seconds = {name: value / (args.tflops * 1e12) for name, value in cost.items()}
    render = args.gsplat_ms / 1000.0
    print(f"FLOPs of one forward (TFLOP), and seconds at {args.tflops:.0f} TFLOP/s:")
    for name, what in (("unet", f"G's UNet, {VIEWS} views, one guidance branch"),
                       ("vae_decode", "VAE decode, one view"), ("vae_encode", "VAE encode, one view"),
                       ("lgm", f"LGM big, {RECONSTRUCTOR_VIEWS} views")):
        print(f"  {what:45s} {cost[name] / 1e12:8.3f}  {seconds[name] * 1000:8.1f} ms")
    # Plain: 50 steps of two UNet passes, the final decode of 24 views, and the final Gaussians
    # (LGM + one gsplat render) that every case makes.
    plain = STEPS * 2 * seconds["unet"] + VIEWS * seconds["vae_decode"] + seconds["lgm"] + render
    reconstruction = (RECONSTRUCTOR_VIEWS * seconds["vae_decode"] + seconds["lgm"] + render
                      + VIEWS * seconds["vae_encode"])
    steps = len(AUTHORS_STEPS)
    print(f"one reconstruction (decode {RECONSTRUCTOR_VIEWS}, LGM, gsplat {args.gsplat_ms:.0f} ms, "
          f"encode {VIEWS}): {reconstruction * 1000:.0f} ms")
    print(f"plain DDIM, {STEPS} steps with guidance: {plain:.2f} s")
    for form, per_step in (("one reconstruction per step", 1), ("two reconstructions per step (authors)", 2)):
        total = plain + steps * per_step * reconstruction
        print(f"3D-aware, {form:40s} {total:.2f} s  x{total / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
