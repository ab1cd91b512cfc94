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

# Put the project root, not jobs/, first on the path: Ray hands the driver's sys.path[0] to its
# workers, and jobs/render.py must not shadow the render package there.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline.disk import log_if_disk_full  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.data.sources import SourceError  # noqa: E402
from pipeline.render_config import RenderJobConfig  # noqa: E402
from pipeline.tracking import TrackingError  # noqa: E402

logger = logging.getLogger("jobs.render")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, RenderJobConfig, exclude=("run_name",))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.render_stage import run_render_job  # after parsing: --help stays quick

    try:
        config = config_from_args(RenderJobConfig, args)
        run_render_job(config)
    except (SourceError, ValueError) as error:
        logger.error("%s", error)
        return 2
    except TrackingError as error:
        logger.error("%s. The shards rendered are in %s; run again to record the job (nothing is rendered twice).",
                     error, config.output)
        return 1
    except Exception as error:  # a full disk is one line, whatever wrapped it on the way (Ray, a worker)
        if not log_if_disk_full(error, logger):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
