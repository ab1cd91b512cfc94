"""The whole pipeline locally on the embedded default: the README's "run" command.

    python jobs/run_all.py [--assets assets] [--out out] [--prompt TEXT]

Renders the bundled sample assets, fine-tunes a tiny text-to-multi-view model on them, trains the
tiny reconstructor on its predictions, starts the Serve endpoint, sends a prompt and writes the 24
views (out/result/grid.png, orbit.gif, views/) and the Gaussians (out/result/gaussians.ply), with
every stage in one MLflow experiment (out/mlflow.db). No GPU and no downloads. Tiny models give
noise-like views; see the README for real weights and data.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT

from pipeline.local_run import LocalRunConfig, run_local  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default=os.path.join(ROOT, "assets"), help="folder, manifest or objaverse: spec")
    parser.add_argument("--out", default="out", help="output folder (default out/)")
    parser.add_argument("--prompt", default=LocalRunConfig.prompt)
    parser.add_argument("--model", default=None, help="diffusers directory to fine-tune (default: a tiny model)")
    parser.add_argument("--finetune-steps", type=int, default=LocalRunConfig.finetune_steps)
    parser.add_argument("--recon-steps", type=int, default=LocalRunConfig.recon_steps)
    parser.add_argument("--sampling-steps", type=int, default=LocalRunConfig.sampling_steps)
    parser.add_argument("--workers", type=int, default=LocalRunConfig.workers)
    args = parser.parse_args(argv)
    run_local(LocalRunConfig(assets=args.assets, out=args.out, prompt=args.prompt, model=args.model,
                             finetune_steps=args.finetune_steps, recon_steps=args.recon_steps,
                             sampling_steps=args.sampling_steps, workers=args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
