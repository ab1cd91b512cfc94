r"""Distil a 3D asset from a prompt (text model) or an image (image model) by multi-view score
distillation with a frozen G (paper 5.2; docs/distillation.md).

    python jobs/distill.py --model out/runs/finetune/final_model --prompt "a yellow rubber duck" \
        --preset toy --output out/distill/duck
    ray job submit --entrypoint-num-gpus 1 --working-dir . -- python jobs/distill.py \
        --model models:/videomv-t2v/1 --prompt "a corgi" --output /shared/distill/corgi --mlflow-uri http://head:5000

Writes gaussians.ply, gaussians.splat, mesh.glb and orbit.mp4 into --output, checkpoints under
--output/checkpoints (a run there resumes), and logs loss, t and orbit renders to MLflow.
``--preset`` picks the settings the other flags start from (mvdream: MVDream's, for a full-size G on
a GPU; toy: the miniature G of ``make run`` on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from models.distillation.config import PRESETS  # noqa: E402
from pipeline.cli import config_from_args  # noqa: E402
from pipeline.distillation import DistillJobConfig  # noqa: E402

logger = logging.getLogger("jobs.distill")


def build_parser(preset: str = "mvdream") -> argparse.ArgumentParser:
    """The job's flags, the distillation's defaults those of ``preset``."""
    return job_parser(__doc__, (DistillJobConfig, {"defaults": {**dataclasses.asdict(PRESETS[preset]),
                                                                "preset": preset}}))


def main(argv: list[str] | None = None) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="mvdream", choices=tuple(PRESETS))
    preset = first.parse_known_args(argv)[0].preset
    args = build_parser(preset).parse_args(argv)
    from pipeline.distillation import distill  # after parsing: --help stays quick

    def work() -> None:
        result = distill(config_from_args(DistillJobConfig, args))
        print("\n".join(f"{kind}: {path}" for kind, path in result.files.items()))  # the job's result, on stdout

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
