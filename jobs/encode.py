r"""Encode orbit shards once into latent shards (the VAE posterior, the caption's text-encoder states,
the cameras) for fine-tuning the text model without its VAE and text encoder on the training GPUs.

Locally (tiny model, CPU actors):
    python jobs/encode.py --data out/shards --model out/tiny-t2v --output out/latents --resolution 32
    python jobs/finetune.py --latents out/latents --model out/tiny-t2v --output out/train --name demo ...
On a GPU cluster (one encode actor per GPU):
    ray job submit --working-dir . -- python jobs/encode.py --data s3://bucket/shards \
        --model /models/text-to-video-ms-1.7b --output s3://bucket/latents-256 --num-gpus-per-actor 1 --max-actors 8
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args  # noqa: E402
from pipeline.encode_config import EncodeConfig  # noqa: E402

logger = logging.getLogger("jobs.encode")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, EncodeConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.encode_stage import run_encode  # after parsing: --help stays quick

    def work() -> None:
        run_encode(config_from_args(EncodeConfig, args))  # it logs what it wrote

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
