"""Render-stage cost: seconds per object and per view, and the full job's overhead over bare bpy.

Every measurement renders the same assets, views and settings in one run on the same CPUs:
- bare: one Python process importing bpy, calling render.blender directly, writing PNGs; run
  twice, before Ray is started and again with Ray started and idle (as on a cluster node, where
  Ray's daemons always run);
- without Ray: the job's own render path in one process (the isolated Blender process of
  render.process, the schema rows, one Parquet shard), before Ray is started: what the project's
  code adds, apart from Ray;
- job: run_render_job (Ray Data + isolated Blender process + encoding + Parquet + MLflow), with
  Ray already started, Ray Data's cluster actors already running and the MLflow store already
  created (as on a cluster: each is once per cluster, not per job; their times are printed
  apart), one render worker using all cores.

Ray Data starts detached actors (its stats, autoscaling-coordinator and actor-location actors) the
first time any job uses it on a cluster; they then serve every later job. Here a trivial Ray Data
job with an actor pool, in its own driver process, starts them before the bare loop beside Ray, so
both that loop and the job run next to them.

    python benchmarks/render.py --input assets --resolution 256 --samples 32
Target: job / bare - 1 <= 5%. Each round runs the four cases in turn and starts its own Ray
instance; repeating the rounds spreads the machine's drift between runs (here up to 20% on
2026-12-01) over every case, and the best of each case is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)


def bare_loop(input_spec: str, settings_json: str, output_dir: str) -> None:
    """Render every asset in this process; prints a JSON line with the timing."""
    from pipeline.render_stage import asset_orbit
    from pipeline.data.sources import resolve_input
    from render import blender
    from render.settings import RenderSettings

    settings = RenderSettings.from_json(settings_json)
    refs = resolve_input(input_spec)
    start = time.perf_counter()
    rendered = 0
    for ref in refs:
        _, _, c2w = asset_orbit(ref.uid, settings)
        folder = tempfile.mkdtemp(dir=output_dir)
        try:
            blender.reset_scene()
            blender.import_asset(ref.uri)
            blender.normalise_scene()
            blender.configure_cycles(settings)
            blender.render_orbit(c2w, settings, folder)
            rendered += 1
        except blender.AssetError:
            pass
    print(json.dumps({"seconds": time.perf_counter() - start, "rendered": rendered}))


def isolated_loop(input_spec: str, settings_json: str, output_dir: str) -> None:
    """The job's own render path without Ray: the isolated Blender process, the schema rows and
    one Parquet shard, in one process; prints a JSON line with the timing."""
    from pipeline.data import schema, shards
    from pipeline.render_stage import render_asset
    from pipeline.data.sources import resolve_input
    from render.process import BlenderProcess
    from render.settings import RenderSettings

    settings = RenderSettings.from_json(settings_json)
    refs = resolve_input(input_spec)
    start = time.perf_counter()
    with BlenderProcess(settings.max_assets_per_process) as process:
        rows = [render_asset(ref, process, settings) for ref in refs]
    for row in rows:
        row["render_node"] = ""
    shards.write_shard_atomically(schema.rows_to_table(rows), os.path.join(output_dir, "isolated"), "shard.parquet")
    rendered = sum(row["status"] == "ok" for row in rows)
    print(json.dumps({"seconds": time.perf_counter() - start, "rendered": rendered}))


class _Identity:
    def __call__(self, batch: dict) -> dict:
        return batch


def start_ray_data_cluster_actors() -> None:
    """Run a trivial Ray Data job with an actor pool on the running cluster (its own driver)."""
    import ray

    ray.init(address="auto", log_to_driver=False)
    ray.data.range(2).map_batches(_Identity, concurrency=1, num_cpus=0).materialize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=os.path.join(ROOT, "assets"), help="folder of assets")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="Cycles device (gpu: on a CUDA/OptiX machine; the job then asks for 1 GPU)")
    parser.add_argument("--copies", type=int, default=4,
                        help="render each asset this many times (as distinct objects) so fixed start-up costs amortise")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds of (bare loop, path without Ray, bare loop beside Ray, job); the best of each "
                             "case is compared")
    parser.add_argument("--bare-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--isolated-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-ray-data", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_loop:
        bare_loop(args.input, args.settings, args.scratch)
        return 0
    if args.isolated_loop:
        isolated_loop(args.input, args.settings, args.scratch)
        return 0
    if args.start_ray_data:
        start_ray_data_cluster_actors()
        return 0

    import ray

    from pipeline.render_stage import RenderJobConfig, run_render_job
    from render.settings import RenderSettings

    cores = os.cpu_count() or 1
    settings = RenderSettings(resolution=args.resolution, samples=args.samples, threads=cores, device=args.device)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        assets = os.path.join(scratch, "assets")
        for copy in range(args.copies):
            shutil.copytree(args.input, os.path.join(assets, f"copy{copy}"))

        def loop_seconds(mode: str = "--bare-loop") -> dict:
            loop = subprocess.run(
                [sys.executable, __file__, mode, "--input", assets, "--settings", settings.to_json(),
                 "--scratch", scratch],
                capture_output=True, text=True, check=True,
            )
            return json.loads(loop.stdout.strip().splitlines()[-1])

        for index in range(args.repeat):
            bare_result = loop_seconds()
            isolated_result = loop_seconds("--isolated-loop")
            ray_start = time.perf_counter()
            ray.init(num_cpus=cores, num_gpus=1 if args.device == "gpu" else 0, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
            ray_seconds = time.perf_counter() - ray_start
            ray_data_start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--start-ray-data"], capture_output=True, check=True)
            ray_data_seconds = time.perf_counter() - ray_data_start
            bare_ray_result = loop_seconds()
            mlflow_uri = f"sqlite:///{scratch}/mlflow-{index}.db"
            # In its own process, so that the job still pays for importing MLflow, as a new job's driver does.
            store_start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import mlflow; mlflow.set_tracking_uri(" + repr(mlflow_uri) + "); "
                            "mlflow.search_experiments()"], capture_output=True, check=True)
            store_seconds = time.perf_counter() - store_start
            job_start = time.perf_counter()
            summary = run_render_job(RenderJobConfig(
                input=assets, output=os.path.join(scratch, f"shards-{index}"), settings=settings, num_workers=1,
                cpus_per_task=cores, gpus_per_task=1.0 if args.device == "gpu" else 0.0, mlflow_uri=mlflow_uri))
            job_seconds = time.perf_counter() - job_start
            ray.shutdown()
            objects = bare_result["rendered"]
            counts = (isolated_result["rendered"], bare_ray_result["rendered"], summary.rendered)
            if objects == 0 or set(counts) != {objects}:
                print(f"error: bare loop rendered {objects}; the job's path without Ray, the bare loop beside Ray "
                      f"and the job rendered {counts}", file=sys.stderr)
                return 1
            rounds.append({"bare": bare_result["seconds"], "isolated": isolated_result["seconds"],
                           "bare_ray": bare_ray_result["seconds"], "job": job_seconds,
                           "ray_init": ray_seconds, "ray_data": ray_data_seconds, "store": store_seconds})

    views = objects * settings.num_views
    print(f"objects: {objects} ({args.copies} copies of {args.input}); {settings.resolution}px, {settings.samples} samples, "
          f"{settings.num_views} views, {cores} CPU threads, Cycles {args.device.upper()}; {args.repeat} round(s)")
    for index, measured in enumerate(rounds):
        print(f"round {index + 1}: bare {measured['bare']:.1f} s, job's path without Ray {measured['isolated']:.1f} s, "
              f"bare with Ray idle {measured['bare_ray']:.1f} s, "
              f"job {measured['job']:.1f} s: {100.0 * (measured['job'] / measured['bare'] - 1.0):+.1f}% / "
              f"{100.0 * (measured['job'] / measured['bare_ray'] - 1.0):+.1f}%")
    best = {key: min(measured[key] for measured in rounds) for key in rounds[0]}
    print("best of the rounds:")
    for name, seconds in (("bare bpy loop", best["bare"]), ("without Ray", best["isolated"]),
                          ("bare, Ray idle", best["bare_ray"]), ("full job", best["job"])):
        print(f"{name:14s}: {seconds:.1f} s = {seconds / objects:.2f} s/object, {seconds / views:.3f} s/view "
              f"({100.0 * (seconds / best['bare'] - 1.0):+.1f}%)")
    print("(without Ray: the job's isolated Blender process, rows and one Parquet shard, in one process; "
          "full job: that under Ray Data, with MLflow)")
    print(f"ray.init      : {best['ray_init']:.1f} s (once per cluster, not per job; excluded above)")
    print(f"Ray Data      : {best['ray_data']:.1f} s for a first Ray Data job to start its cluster actors "
          "(once per cluster; excluded above)")
    print(f"MLflow store  : {best['store']:.1f} s to create it (once per store, not per job; excluded above)")
    print(f"overhead      : {100.0 * (best['job'] / best['bare'] - 1.0):+.1f}% over the bare loop, "
          f"{100.0 * (best['job'] / best['bare_ray'] - 1.0):+.1f}% over the bare loop with Ray idle "
          "(target <= 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
