"""Overfit the tiny reconstructor on one rendered object and print PSNR on its non-input views.

    python jobs/render.py --input assets --output out/shards --resolution 64
    python jobs/overfit_recon.py --shards out/shards [--uid UID] [--steps 60]

A check that the reconstructor, the Gaussian renderer and the camera conventions fit together:
PSNR on the 20 views that are not inputs must rise clearly above its step-0 value.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from models.reconstructor.model import LGM  # noqa: E402
from models.reconstructor.options import PRESETS  # noqa: E402
from models.reconstructor.training import overfit_one_object  # noqa: E402
from pipeline.data import shards  # noqa: E402
from pipeline.data.rows import row_to_tensors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, help="render-stage output (folder or URI)")
    parser.add_argument("--uid", default=None, help="object to use (default: the first ok row)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=32, help="input and supervision resolution (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = shards.read_rows(args.shards)
    rows = [row for row in rows if args.uid in (None, row["uid"])]
    if not rows:
        print(f"error: no ok row{' with uid ' + args.uid if args.uid else ''} in {args.shards}", file=sys.stderr)
        return 2
    data = row_to_tensors(rows[0], background=(1.0, 1.0, 1.0))
    torch.manual_seed(args.seed)
    model = LGM(dataclasses.replace(PRESETS["tiny"], input_size=args.size, output_size=args.size))
    result = overfit_one_object(model, data["views"], data["alphas"], data["c2w"], steps=args.steps, seed=args.seed)
    print(f"object {rows[0]['uid']}: {result.steps} steps, held-out PSNR {result.psnr_before:.2f} dB -> "
          f"{result.psnr_after:.2f} dB (loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
