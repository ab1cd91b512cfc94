"""The flags of ``jobs/render.py`` (``RenderJobConfig``), apart from the render stage
(``pipeline.render_stage``) so that ``--help`` loads neither Ray Data nor MLflow."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.cli import check_minimums, option
from pipeline.tracking import ARTIFACTS_HELP
from render.settings import RenderSettings


@dataclass
class RenderJobConfig:
    """Everything ``jobs/render.py`` exposes as flags (``pipeline.cli``; see its ``--help``)."""
    # Fields that are paths or URIs (pipeline.submission: what a submitted job may be given).
    LOCATIONS = {
        "input": "input", "output": "output", "captions": "input", "objaverse_root": "output",
        "mlflow_uri": "tracking", "mlflow_artifacts": "output"}

    input: str = option(help="a folder of assets, a manifest file (one path or fsspec URI per line), or "
                             "objaverse:[lvis=CATEGORY][,uids=FILE][,limit=N]")
    output: str = option(help="shard folder: local path or fsspec URI (s3://, gs://, ...)")
    settings: RenderSettings = dataclasses.field(default_factory=RenderSettings)
    captions: str | None = option(None, "CSV 'uid or file name,caption' (Cap3D style) attaching captions")
    objaverse_root: str | None = option(None, "Objaverse cache root (default ~/.objaverse)")
    objects_per_file: int = option(100, "objects per Parquet shard", minimum=1)
    assets_per_batch: int = option(1, "assets handed to a render worker at once", minimum=1)
    download_processes: int = option(1, "parallel Objaverse downloads per batch (threads of the render actor)",
                                     minimum=1)
    num_workers: int | None = option(None, "parallel Blender processes (default: as many as the cluster's "
                                           "CPUs/GPUs allow)", minimum=1)
    cpus_per_task: float = option(1.0, "CPUs per render worker", exclusive_minimum=0.0)
    gpus_per_task: float = option(0.0, "GPUs per render worker", minimum=0.0)
    # cluster.yaml gives the CPU render group such a resource, to keep Blender off the A100 nodes.
    resources_per_task: dict[str, float] = option(
        {}, "custom Ray resources per render worker, e.g. render=1 (places rendering on the nodes that "
            "advertise them)")
    retry_failed: bool = option(False, "render again assets that failed before")
    mlflow_uri: str | None = option(None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///mlflow.db)")
    mlflow_artifacts: str | None = option(None, ARTIFACTS_HELP)
    experiment: str = option("videomv-render", "MLflow experiment name")
    run_name: str | None = option(None, "MLflow run name")

    def __post_init__(self) -> None:
        check_minimums(self)
