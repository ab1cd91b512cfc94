r"""Render assets into 24-view orbit Parquet shards.

Locally:   python jobs/render.py --input assets --output out/shards
On Ray:    ray job submit --working-dir . -- python jobs/render.py --input objaverse:lvis=chair,limit=100 \
               --output s3://bucket/shards --resolution 256 --samples 32
Re-running with the same --output renders only assets that are not there yet.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# The project, not jobs/, first on the path: jobs/render.py must not shadow the render package in Ray's
# workers (pipeline/entry.py says why every script starts so).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args  # noqa: E402
from pipeline.render_config import RenderJobConfig  # noqa: E402
from pipeline.tracking import TrackingError  # noqa: E402

logger = logging.getLogger("jobs.render")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, (RenderJobConfig, {"exclude": ("run_name",)}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.render_stage import run_render_job  # after parsing: --help stays quick

    def work() -> None:
        config = config_from_args(RenderJobConfig, args)
        try:
            run_render_job(config)
        except TrackingError as error:
            raise TrackingError(f"{error}. The shards rendered are in {config.output}; run again to record the job "
                                "(nothing is rendered twice).") from error

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
