"""Render assets into 24-view orbit Parquet shards.

Locally:   python jobs/render.py --input ../shared/assets --output out/shards
On Ray:    ray job submit --working-dir . -- python jobs/render.py --input objaverse:lvis=chair,limit=100 \
               --output s3://bucket/shards --resolution 256 --samples 32
Re-running with the same --output renders only assets that are not there yet.
"""

from __future__ import annotations

import argparse
import os
import sys

# Put the project root, not jobs/, first on the path: Ray hands the driver's sys.path[0] to its
# workers, and jobs/render.py must not shadow the render package there.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import camera  # noqa: E402
from pipeline.render_stage import RenderJobConfig, run_render_job  # noqa: E402
from pipeline.resources import parse_resources  # noqa: E402
from pipeline.sources import SourceError  # noqa: E402
from render.settings import PASSES, RenderSettings  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True,
                        help="a folder of assets, a manifest file (one path or fsspec URI per line), or "
                             "objaverse:[lvis=CATEGORY][,uids=FILE][,limit=N]")
    parser.add_argument("--output", required=True, help="shard folder: local path or fsspec URI (s3://, gs://, ...)")
    parser.add_argument("--resolution", type=int, default=256, help="square image size in pixels (default 256)")
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel (default 32)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per asset before its Blender process is killed (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="with each uid, fixes the object's elevation (default 0)")
    parser.add_argument("--num-views", type=int, default=camera.NUM_VIEWS, help="views per orbit (default 24)")
    parser.add_argument("--distance", type=float, default=camera.DEFAULT_DISTANCE,
                        help=f"camera distance to the object's centre (default {camera.DEFAULT_DISTANCE})")
    parser.add_argument("--fov", type=float, default=camera.DEFAULT_FOV_DEG,
                        help=f"vertical field of view in degrees (default {camera.DEFAULT_FOV_DEG})")
    parser.add_argument("--elevation-range", type=float, nargs=2, default=camera.ELEVATION_RANGE_DEG,
                        metavar=("LOW", "HIGH"), help="elevation range in degrees (default 5 30)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="Cycles device: auto uses a GPU when Cycles finds one (default auto)")
    parser.add_argument("--passes", default="", help=f"extra passes, comma-separated from {','.join(PASSES)}")
    parser.add_argument("--objects-per-file", type=int, default=100, help="objects per Parquet shard (default 100)")
    parser.add_argument("--assets-per-batch", type=int, default=1,
                        help="assets handed to a render worker at once (default 1)")
    parser.add_argument("--download-processes", type=int, default=1,
                        help="parallel Objaverse downloads per batch (objaverse.load_objects; default 1)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="parallel Blender processes (default: as many as the cluster's CPUs/GPUs allow)")
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per render worker (default 1)")
    parser.add_argument("--gpus-per-task", type=float, default=0.0, help="GPUs per render worker (default 0)")
    parser.add_argument("--resources-per-task", nargs="+", default=None, metavar="NAME=AMOUNT",
                        help="custom Ray resources per render worker, e.g. render=1 (places rendering on the "
                             "nodes that advertise them)")
    parser.add_argument("--max-assets-per-process", type=int, default=20,
                        help="recycle each Blender process after this many assets (default 20)")
    parser.add_argument("--retry-failed", action="store_true", help="render again assets that failed before")
    parser.add_argument("--captions", default=None, help="CSV uid,caption (Cap3D style) to attach captions")
    parser.add_argument("--objaverse-root", default=None, help="Objaverse cache root (default ~/.objaverse)")
    parser.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="videomv-render", help="MLflow experiment name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        resources = parse_resources(args.resources_per_task)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = RenderSettings(
        resolution=args.resolution,
        samples=args.samples,
        num_views=args.num_views,
        distance=args.distance,
        fov=args.fov,
        elevation_range=tuple(args.elevation_range),
        seed=args.seed,
        device=args.device,
        passes=tuple(p for p in args.passes.split(",") if p),
        timeout=args.timeout,
        max_assets_per_process=args.max_assets_per_process,
    )
    config = RenderJobConfig(
        input=args.input,
        output=args.output,
        settings=settings,
        captions=args.captions,
        objaverse_root=args.objaverse_root,
        objects_per_file=args.objects_per_file,
        assets_per_batch=args.assets_per_batch,
        download_processes=args.download_processes,
        num_workers=args.num_workers,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        resources_per_task=resources,
        retry_failed=args.retry_failed,
        mlflow_uri=args.mlflow_uri,
        experiment=args.experiment,
    )
    try:
        run_render_job(config)
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
