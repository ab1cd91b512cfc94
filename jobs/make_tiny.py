"""Build tiny random-weight models offline and save them in the real checkpoint layout.

    python jobs/make_tiny.py --variant t2v --output out/tiny-t2v
    python jobs/make_tiny.py --variant i2v --output out/tiny-i2v
    python jobs/make_tiny.py --variant lgm --output out/tiny-lgm
    python jobs/make_tiny.py --variant metrics --output out/tiny-metrics

The diffusion directories load through the same code as published checkpoints
(text-to-video-ms-1.7b, i2vgen-xl); the LGM directory through ``LGM.from_pretrained``. Tests and the
local demo use them. ``metrics`` writes random CLIP, RAFT and LPIPS weights in their published
layouts, for trying ``jobs/evaluate.py`` offline (the scores are then meaningless as numbers).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from models.reconstructor.model import LGM  # noqa: E402
from models.toy.tiny import make_tiny, make_tiny_evaluation_weights  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("t2v", "i2v", "lgm", "metrics"), required=True,
                        help="t2v: ModelScope T2V layout; i2v: I2VGen-XL layout; lgm: the tiny reconstructor; "
                             "metrics: CLIP/RAFT/LPIPS weight files for jobs/evaluate.py")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    if os.path.isdir(args.output) and os.listdir(args.output):
        print(f"error: {args.output} exists and is not empty; choose another --output", file=sys.stderr)
        return 2
    if args.variant == "lgm":
        torch.manual_seed(args.seed)
        LGM("tiny").save_pretrained(args.output)
    elif args.variant == "metrics":
        for name, path in make_tiny_evaluation_weights(args.output, seed=args.seed).items():
            print(f"  --{name.replace('_', '-')} {path}")
    else:
        make_tiny(args.variant, args.output, seed=args.seed)
    print(f"wrote tiny {args.variant} model to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
