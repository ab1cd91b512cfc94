"""The render stage: assets -> Ray Data -> isolated Blender renders -> orbit Parquet shards.

``render_asset`` renders one asset into one schema row (no Ray involved, so tests call it
directly); ``OrbitRenderer`` is the Ray Data actor that holds a recycled Blender process;
``run_render_job`` wires sources, resume, Ray Data, the shard sink and MLflow together.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.util.queue

import camera
from pipeline.cluster import connect
from pipeline.data import schema, shards
from pipeline.logs import configure_logging
from pipeline.data.sources import AssetRef, SourceError, fetch_asset, prefetch_objaverse, scan_input
from pipeline.render_config import RenderJobConfig
from pipeline.tracking import mlflow_run_in_background
from render.process import BlenderProcess, RenderFailure
from render.settings import RenderSettings

logger = logging.getLogger(__name__)
DOWNLOAD_STALL_TIMEOUT_S = 120.0  # seconds a download may receive nothing before it fails


def asset_orbit(uid: str, settings: RenderSettings) -> tuple[float, np.ndarray, np.ndarray]:
    """(elevation, azimuths [V], c2w [V, 4, 4]) of an object's orbit, reproducible from (uid, seed)."""
    elevation = camera.sample_elevation(uid, settings.seed, settings.elevation_range)
    azimuths = camera.orbit_azimuths(settings.num_views)
    return elevation, azimuths, camera.orbit_c2w(elevation, azimuths, settings.distance)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def render_asset(
    ref: AssetRef, process: BlenderProcess, settings: RenderSettings, objaverse_root: str | None = None
) -> dict[str, Any]:
    """Render one asset into a complete schema row; failures become a "failed" row with the error."""
    elevation, azimuths, c2w = asset_orbit(ref.uid, settings)
    intrinsics = camera.intrinsics_from_fov(settings.fov, settings.resolution, settings.resolution)
    row = schema.empty_row(
        uid=ref.uid,
        source=ref.source,
        uri=ref.uri,
        caption=ref.caption,
        license=ref.license,
        elevation=elevation,
        azimuth=azimuths.tolist(),
        distance=settings.distance,
        fov=settings.fov,
        c2w=c2w.reshape(-1, 16).tolist(),
        intrinsics=intrinsics.reshape(-1).tolist(),
        width=settings.resolution,
        height=settings.resolution,
        background=schema.BACKGROUND_TRANSPARENT,
        render_settings=settings.to_json(),
    )
    start = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="asset-")
    try:
        path = fetch_asset(ref, scratch, objaverse_root)
        output = process.render(path, c2w, settings)
        row["missing_textures"] = len(output.missing_textures)
        if output.missing_textures:
            logger.warning("%s: %d texture(s) missing, rendered magenta (missing_textures=fail makes this a "
                           "failure): %s", ref.uid, len(output.missing_textures), ", ".join(output.missing_textures[:5]))
        try:
            row["views"] = [_read_file(p) for p in output.views]
            for name, paths in output.passes.items():
                row[name] = [schema.encode_array(np.load(p)) for p in paths]
        finally:
            output.cleanup()
        row["status"] = schema.STATUS_OK
    except (RenderFailure, SourceError) as error:
        row["status"] = schema.STATUS_FAILED
        row["error"] = str(error)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    row["render_seconds"] = time.perf_counter() - start
    row["blender_version"] = process.blender_version
    return row


class OrbitRenderer:
    """Ray Data actor: renders each input row (an ``AssetRef``) into a shard row.

    Holds one Blender process for its lifetime (recycled every ``max_assets_per_process``
    objects), so Blender's start-up cost is paid once per actor, not per object.
    """

    def __init__(self, settings_json: str, objaverse_root: str | None = None, download_processes: int = 1,
                 progress: Any = None) -> None:
        configure_logging()  # a Ray Data actor process
        self.progress = progress  # a ray.util.queue.Queue the driver logs each result from, as it finishes
        # objaverse downloads with urllib and no timeout: a connection that stalls would hold this
        # actor forever (the render timeout starts after the download), so a stall fails instead.
        socket.setdefaulttimeout(DOWNLOAD_STALL_TIMEOUT_S)
        self.settings = RenderSettings.from_json(settings_json)
        self.objaverse_root = objaverse_root
        self.download_processes = download_processes
        self.process = BlenderProcess(self.settings.max_assets_per_process,
                                      memory_limit_gb=self.settings.memory_limit_gb)

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.to_pylist()
        objaverse_uids = [item["uri"] for item in items if item["source"] == "objaverse"]
        if len(objaverse_uids) > 1 and self.download_processes > 1:
            prefetch_objaverse(objaverse_uids, self.download_processes, self.objaverse_root)
        rows = []
        node = ray.get_runtime_context().get_node_id()
        for item in items:
            row = render_asset(AssetRef.from_row(item), self.process, self.settings, self.objaverse_root)
            row["render_node"] = node
            if self.progress is not None:
                self.progress.put((row["uid"], row["status"], row["render_seconds"],
                                   shards.first_line(row["error"])))
            rows.append(row)
        return schema.rows_to_table(rows)

    def __del__(self) -> None:
        process = getattr(self, "process", None)
        if process is not None:
            process.close()


@dataclass
class RenderSummary:
    total: int
    skipped: int
    rendered: int
    failed: int
    seconds: float
    shards: list[str]
    nodes: dict[str, int] = dataclasses.field(default_factory=dict)  # Ray node id -> objects rendered there
    failed_uids: list[str] = dataclasses.field(default_factory=list)
    unsupported: str = ""  # files of unsupported types in the input, e.g. "1 .dae (...)"
    uncaptioned: int = 0  # assets of the input with no caption (they train on the suffix alone)

    @property
    def objects_per_minute(self) -> float:
        done = self.rendered + self.failed
        return 60.0 * done / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"render summary: {self.total} assets, {self.skipped} skipped (already done), "
            f"{self.rendered} rendered, {self.failed} failed, {self.seconds:.1f} s, "
            f"{self.objects_per_minute:.1f} objects/min, {len(self.shards)} new shard(s)"
            + (f" from {len(self.nodes)} node(s)" if self.nodes else "")
            + (f"; failed: {', '.join(self.failed_uids)}" if self.failed_uids else "")
            + (f"; not rendered (unsupported type): {self.unsupported}" if self.unsupported else "")
            + (f"; {self.uncaptioned} of {self.total} assets have no caption"
               + (" (most: give --captions, e.g. Cap3D's uid,caption CSV)" if 2 * self.uncaptioned > self.total else "")
               if self.uncaptioned else "")
        )


class ProgressLog:
    """The driver's log of render results as the workers finish them: one line per asset, with the
    count done, the rate and the time left."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def log(self, uid: str, status: str, seconds: float, error: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        rate = 60.0 * self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        log = logger.info if status == schema.STATUS_OK else logger.warning
        log("%s %s in %.1f s%s [%d/%d, %.1f objects/min, %.1f min left]", uid, status, seconds,
            f": {error}" if error else "", self.done, self.total, rate, left)

    def drain(self, queue: Any, wait: float = 0.0) -> None:
        """Log every result waiting in ``queue`` (waiting up to ``wait`` seconds for the first)."""
        try:
            items = [queue.get(timeout=wait)] if wait else []
            items += queue.get_nowait_batch(queue.qsize())
        except (ray.util.queue.Empty, ray.exceptions.RayError):
            return
        for item in items:
            self.log(*item)


def _write_with_progress(dataset: Any, sink: Any, queue: Any, total: int) -> None:
    """``dataset.write_datasink(sink)`` while logging each result from ``queue`` as it arrives."""
    import concurrent.futures

    progress = ProgressLog(total)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="render-write") as executor:
        # Shard writes are light (views are encoded already); asking for no CPU lets them run
        # while the renderers hold every CPU, so shards land (and survive a crash) during the
        # job rather than at its end.
        writing = executor.submit(dataset.write_datasink, sink, ray_remote_args={"num_cpus": 0})
        while not writing.done():
            progress.drain(queue, wait=1.0)
        progress.drain(queue)
        writing.result()


def select_pending(refs: list[AssetRef], output: str, retry_failed: bool) -> list[AssetRef]:
    """Refs not yet in ``output``: ok rows are never redone, failed ones only with ``retry_failed``."""
    done = shards.existing_status(output)
    return [
        ref
        for ref in refs
        if ref.uid not in done or (retry_failed and done[ref.uid] != schema.STATUS_OK)
    ]


def _default_workers(cpus_per_task: float, gpus_per_task: float, custom: dict[str, float]) -> int:
    """As many workers as the cluster's CPUs, GPUs and custom resources allow at once."""
    resources = ray.cluster_resources()
    limits = [int(resources.get("CPU", 1) // max(cpus_per_task, 1e-6))]
    if gpus_per_task > 0:
        limits.append(int(resources.get("GPU", 0) // gpus_per_task))
    for name, amount in custom.items():
        if amount > 0:
            limits.append(int(resources.get(name, 0) // amount))
    return max(1, min(limits))


def run_render_job(config: RenderJobConfig) -> RenderSummary:
    """Render every pending asset of ``config.input`` into shards under ``config.output``.

    Connects to the running Ray cluster (or starts a local one). Resumable: re-running with the
    same output renders only what is missing.
    """
    start = time.perf_counter()
    resolved = scan_input(config.input, config.captions, config.objaverse_root)
    refs = resolved.refs
    removed = shards.remove_stale_temporaries(config.output)
    if removed:
        logger.warning("removed %d half-written shard(s) left by an interrupted run", removed)
    pending = select_pending(refs, config.output, config.retry_failed)
    logger.info("%d assets in input, %d already in %s, %d to render", len(refs), len(refs) - len(pending),
                config.output, len(pending))
    params = {
        "input": config.input,
        "output": config.output,
        "objects_per_file": config.objects_per_file,
        "assets_per_batch": config.assets_per_batch,
        "cpus_per_task": config.cpus_per_task,
        "gpus_per_task": config.gpus_per_task,
        "resources_per_task": config.resources_per_task,
        "retry_failed": config.retry_failed,
        **{f"render.{k}": v for k, v in dataclasses.asdict(config.settings).items()},
    }
    # The run opens on a helper thread while Ray Data starts its actors (see BackgroundRun).
    with mlflow_run_in_background(config.experiment, config.run_name, config.mlflow_uri, params,
                                  config.mlflow_artifacts) as run:
        sink = shards.OrbitShardDatasink(config.output, config.objects_per_file)
        if pending:
            connect()
            workers = config.num_workers or _default_workers(config.cpus_per_task, config.gpus_per_task,
                                                             config.resources_per_task)
            threads = config.settings.threads or max(1, int(config.cpus_per_task))
            settings = dataclasses.replace(config.settings, threads=threads)
            progress = ray.util.queue.Queue(actor_options={"num_cpus": 0})
            dataset = ray.data.from_items(
                [ref.to_row() for ref in pending], override_num_blocks=min(len(pending), 64 * workers)
            )
            rendered = dataset.map_batches(
                OrbitRenderer,
                fn_constructor_kwargs={
                    "settings_json": settings.to_json(),
                    "objaverse_root": config.objaverse_root,
                    "download_processes": config.download_processes,
                    "progress": progress,
                },
                batch_size=config.assets_per_batch,
                batch_format="pyarrow",
                # At most one batch queued behind the running one: long renders spread over every
                # worker instead of piling up on the first actor that starts.
                compute=ray.data.ActorPoolStrategy(size=min(workers, len(pending)), max_tasks_in_flight_per_actor=2),
                num_cpus=config.cpus_per_task,
                num_gpus=config.gpus_per_task,
                resources=config.resources_per_task or None,
            )
            _write_with_progress(rendered, sink, progress, len(pending))
        results = [result for shard in sink.written for result in shard.results]
        summary = RenderSummary(
            total=len(refs),
            skipped=len(refs) - len(pending),
            rendered=sum(s.ok for s in sink.written),
            failed=sum(s.failed for s in sink.written),
            seconds=time.perf_counter() - start,
            shards=[s.path for s in sink.written],
            nodes=dict(sum((collections.Counter(s.nodes) for s in sink.written), collections.Counter())),
            failed_uids=[uid for uid, status, _, _ in results if status != schema.STATUS_OK],
            unsupported=resolved.unsupported_summary(),
            uncaptioned=sum(1 for ref in refs if not ref.caption),
        )
        # Before the metrics: a tracking store that failed still leaves the summary in the log.
        logger.info("%s", summary)
        render_seconds = sum(s.render_seconds for s in sink.written)
        run.log_metrics(
            {
                "assets_total": summary.total,
                "assets_skipped": summary.skipped,
                "assets_rendered": summary.rendered,
                "assets_failed": summary.failed,
                "job_seconds": summary.seconds,
                "objects_per_minute": summary.objects_per_minute,
                "render_seconds_per_object": render_seconds / max(1, summary.rendered + summary.failed),
                "render_nodes": len(summary.nodes),
                "files_unsupported": sum(resolved.unsupported.values()),
            }
        )
        run.set_tag("render_nodes", ",".join(f"{node}:{count}" for node, count in sorted(summary.nodes.items())))
    return summary
