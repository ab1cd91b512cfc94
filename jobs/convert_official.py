r"""Convert the authors' released VideoMV checkpoint (.pth) into a VideoMVPipeline directory.

    python jobs/convert_official.py --checkpoint pretrained_models/t2v_00333000.pth \
        --base /models/text-to-video-ms-1.7b --output out/models/videomv-t2v
    # an EMA checkpoint sharded by rank: give every shard
    python jobs/convert_official.py --checkpoint ema_00333000_rank0000.pth ema_00333000_rank0001.pth ... \
        --base /models/text-to-video-ms-1.7b --output out/models/videomv-t2v-ema

The output loads with VideoMVPipeline.from_pretrained and as --model / --model-dir of every job.
Conversion is strict (models/official_checkpoint.py); the checkpoint is read without running code.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import BAD_INPUT, job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args, option  # noqa: E402
from pipeline.disk import atomic_directory  # noqa: E402

logger = logging.getLogger("jobs.convert_official")


@dataclasses.dataclass
class ConvertConfig:
    LOCATIONS = {"base": "input", "output": "output"}  # paths (pipeline.submission)

    checkpoint: tuple[str, ...] = option(help="the authors' .pth (or every rank shard of an EMA checkpoint)")
    base: str = option(help="the published diffusers directory of the checkpoint's variant (text-to-video-ms-1.7b "
                            "or i2vgen-xl): VAE, encoders, tokenizer, scheduler, and the UNet's config")
    output: str = option(help="directory for the converted VideoMVPipeline (must not exist yet)")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, ConvertConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.official_checkpoint import CheckpointConversionError, convert_official  # after parsing: --help stays quick

    def work() -> None:
        config = config_from_args(ConvertConfig, args)
        if os.path.exists(config.output) and os.listdir(config.output):
            raise ValueError(f"{config.output} exists and is not empty: nothing is overwritten")
        try:
            pipe = convert_official(list(config.checkpoint), config.base)
        except BAD_INPUT:
            raise
        except Exception as error:  # whatever a foreign file trips on: one line naming it, never a traceback
            raise CheckpointConversionError(f"conversion failed: {type(error).__name__}: {error}") from error
        with atomic_directory(config.output) as staging:  # a failure leaves no half-written model
            pipe.save_pretrained(staging)
        logger.info("converted %s into %s (reconstructor: %s)", ", ".join(config.checkpoint), config.output,
                    "yes" if pipe.reconstructor is not None else "none in the checkpoint")

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
