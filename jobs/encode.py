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

from pipeline.disk import log_if_disk_full  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.encode_config import EncodeConfig  # noqa: E402

logger = logging.getLogger("jobs.encode")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, EncodeConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.pipeline_videomv.loading import ModelDirectoryError  # after parsing: --help stays quick
    from pipeline.encode_stage import run_encode

    try:
        run_encode(config_from_args(EncodeConfig, args))
    except (ModelDirectoryError, ValueError) as error:
        logger.error("%s", error)
        return 2
    except Exception as error:  # a full disk is one line, whatever wrapped it on the way (Ray, a worker)
        if not log_if_disk_full(error, logger):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
