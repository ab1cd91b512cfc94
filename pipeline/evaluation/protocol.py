"""The evaluation job: the paper's protocol on a model directory, 3D-aware sampling on and off.

Text-to-multi-view models are scored on a prompt file (one prompt per line, T3Bench style),
image-to-multi-view models on held-out orbit shards (condition on view 0, compare with the
ground-truth renders at the same cameras, and the mesh of the Gaussians against the held-out
asset's own mesh: Chamfer distance, F-score, volume IoU, ``models.metrics.geometry``); see
``pipeline.evaluation.sample_scores`` for the image metrics. Each
sample is drawn with the same seed in every setting, so the settings differ only in sampling.
Results go to MLflow (per-setting means as metrics, per-sample CSV, the table, view grids) and
come back as an ``EvaluationResult`` whose ``table()`` prints settings side by side.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import camera
from models.mesh.from_gaussians import mesh_from_gaussians
from models.mesh.fusion import MeshingError
from models.metrics.geometry import geometry_scores
from models.metrics.scores import MetricNetworks
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline, VideoMVPipelineOutput, load_pipeline
from models.pipeline_videomv.three_d_aware import reconstruction_steps
from models.variants import VARIANTS
from pipeline.evaluation.sample_scores import score_image_to_multiview, score_text_to_multiview
from pipeline.data import shards
from pipeline.serve.media import grid_image, to_uint8
from pipeline.data.rows import row_to_tensors
from pipeline.evaluation.result_scores import reference_meshes
from pipeline.evaluation.config import EvaluationConfig
from pipeline.tracking import mlflow_run, tracking_uri

logger = logging.getLogger(__name__)

# Lower is better for these; the rest are higher-is-better.
LOWER_IS_BETTER = ("lpips", "flow_rmse_1", "flow_rmse_6", "chamfer")
METRIC_ORDER = ("psnr", "ssim", "lpips", "clip_score", "flow_rmse_1", "flow_rmse_6", "chamfer", "fscore", "volume_iou",
                "seconds")


@dataclass
class EvaluationResult:
    task: str  # "text-to-multiview" or "image-to-multiview"
    rows: list[dict[str, Any]]  # one per (sample, setting)
    summary: dict[str, dict[str, float]]  # setting -> metric -> mean over samples

    def table(self) -> str:
        """Markdown table: one row per metric, one column per setting."""
        settings = list(self.summary)
        metrics = [m for m in METRIC_ORDER if any(m in self.summary[s] for s in settings)]
        lines = [f"| {self.task} | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        for metric in metrics:
            arrow = "↓" if metric in LOWER_IS_BETTER or metric == "seconds" else "↑"
            values = [self.summary[s].get(metric, math.nan) for s in settings]
            lines.append(f"| {metric} {arrow} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
        return "\n".join(lines)


def load_prompts(path: str) -> list[str]:
    """Prompts from a text file: one per line; blank lines and lines starting with '#' skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        prompts = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts")
    return prompts


def load_held_out(path: str, resolution: int, frames: int, background: tuple[float, float, float],
                  limit: int | None = None) -> list[dict[str, Any]]:
    """Held-out objects from orbit shards: {"uid", "views" [F, 3, R, R] in [0, 1] on ``background``
    (RGB in [0, 1]), "elevation", "distance"}. Rows must have ``frames`` views at the orbit azimuths."""
    rows = shards.read_rows(path)
    if not rows:
        raise ValueError(f"no rendered (status ok) objects in {path}")
    expected = camera.orbit_azimuths(frames)
    objects = []
    for row in rows[:limit]:
        azimuths = np.asarray(row["azimuth"], dtype=np.float64)
        if len(azimuths) != frames or not np.allclose(azimuths, expected, atol=1e-3):
            raise ValueError(f"object {row['uid']} in {path} was rendered at {len(azimuths)} views "
                             f"(azimuths {azimuths[:3].tolist()}...); the model needs the {frames}-view orbit")
        views = row_to_tensors(row, background=background)["views"]
        views = F.interpolate(views, size=(resolution, resolution), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        objects.append({"uid": row["uid"], "uri": row["uri"], "views": views, "elevation": float(row["elevation"]),
                        "distance": float(row["distance"])})
    return objects


def _reference_meshes(config: EvaluationConfig, samples: list[dict[str, Any]], pipe: VideoMVPipeline,
                      log: Any) -> dict[str, Any] | None:
    """uid -> the held-out asset's mesh (``reference_meshes``), or None (with the reason logged)
    when the geometry scores are off, there is no reconstructor, or an asset file is not local."""
    if not config.geometry:
        return None
    if pipe.reconstructor is None:
        log("no reconstructor, so no Gaussians to mesh: the geometry scores are left out")
        return None
    missing = [sample["uri"] for sample in samples if not os.path.isfile(sample["uri"])]
    if missing:
        log(f"{len(missing)} held-out asset file(s) are not on this machine (e.g. {missing[0]}): "
            "the geometry scores are left out (copy the assets where the shards' uri says, or --no-geometry)")
        return None
    return reference_meshes({sample["uid"]: sample["uri"] for sample in samples})


def _geometry(result: VideoMVPipelineOutput, views: torch.Tensor, reference: Any, log: Any) -> dict[str, float]:
    """Geometry scores of the mesh of the sample's Gaussians; NaN, logged, when they give none."""
    try:
        mesh = mesh_from_gaussians(result.gaussians[0], views, result.cameras[0])  # depth rendered on their device
    except MeshingError as error:
        log(f"no mesh from this sample's Gaussians ({error}): its geometry scores are NaN")
        return {"chamfer": math.nan, "fscore": math.nan, "volume_iou": math.nan}
    return geometry_scores(mesh.watertight, reference)


def _sample(pipe: VideoMVPipeline, config: EvaluationConfig, setting: str, seed: int,
            **inputs: Any) -> VideoMVPipelineOutput:
    """One sample of ``setting`` ("plain" or "3d-aware") through the pipeline, as tensors."""
    schedule = config.schedule if setting == "3d-aware" else "none"
    return pipe(**inputs, num_inference_steps=config.num_inference_steps, generator=torch.Generator().manual_seed(seed),
                three_d_aware=reconstruction_steps(config.num_inference_steps, schedule), three_d_aware_mode=config.mode,
                output_type="pt")


def _summarise(rows: list[dict[str, Any]], settings: tuple[str, ...]) -> dict[str, dict[str, float]]:
    summary = {}
    for setting in settings:
        chosen = [row for row in rows if row["setting"] == setting]
        metrics = [m for m in METRIC_ORDER if m in chosen[0]]
        summary[setting] = {m: float(np.mean([row[m] for row in chosen])) for m in metrics}
    return summary


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def evaluate(config: EvaluationConfig, log: Callable[[str], None] | None = None) -> EvaluationResult:
    """Run the protocol; returns the rows and per-setting means (also logged to MLflow). ``log``
    takes its progress lines (default: this module's logger, in the jobs' one format)."""
    log = log or logger.info
    if "3d-aware" in config.settings and config.reconstructor is None:
        raise ValueError("the 3d-aware setting needs a reconstructor (--reconstructor), or evaluate --settings plain")
    pipe = load_pipeline(config.model, config.reconstructor, tracking_uri=tracking_uri(config.mlflow_uri),
                         dtype=config.dtype, use_ema=config.use_ema)
    pipe.set_progress_bar_config(disable=True)
    device = pipe.device
    background = VARIANTS[pipe.variant].background
    networks = MetricNetworks.from_paths(config.lpips_vgg, config.lpips_lin, config.clip, config.raft,
                                         config.raft_iterations).to(device)
    frames, resolution = pipe.num_frames, pipe.resolution
    if VARIANTS[pipe.variant].takes_prompt:
        if not config.prompts:
            raise ValueError(f"{config.model} is a text-to-multi-view model: give a prompt file (--prompts)")
        task, samples = "text-to-multiview", load_prompts(config.prompts)[: config.max_samples]
    else:
        if not config.shards:
            raise ValueError(f"{config.model} is an image-to-multi-view model: give held-out shards (--shards)")
        task, samples = "image-to-multiview", load_held_out(config.shards, resolution, frames, background,
                                                                   config.max_samples)
    references = _reference_meshes(config, samples, pipe, log) if task == "image-to-multiview" else None
    absent = [name for name in ("lpips", "clip", "raft") if getattr(networks, name) is None]
    if absent:
        log(f"no weights given for {', '.join(absent)}: those scores are left out")

    params = {**{k: v for k, v in asdict(config).items() if k != "fit"},
              **{f"fit_{k}": v for k, v in asdict(config.fit).items()}, "task": task, "samples": len(samples),
              "networks": ",".join(networks.names()) or "none"}
    rows: list[dict[str, Any]] = []
    with mlflow_run(config.experiment, config.run_name, config.mlflow_uri, params, config.mlflow_artifacts) as mlflow:
        for index, sample in enumerate(samples):
            seed = config.seed + index
            grids = []
            for setting in config.settings:
                start = time.perf_counter()
                if task == "text-to-multiview":
                    result = _sample(pipe, config, setting, seed, prompt=sample)
                    # The fit and the metrics on the model's device (gsplat on a GPU node), in fp32.
                    views, c2w = result.frames[0].to(device).float(), torch.from_numpy(result.cameras[0]).to(device)
                    scores = score_text_to_multiview(sample, views, c2w, camera.DEFAULT_FOV_DEG,
                                                     background, networks, config.fit)
                    name = sample
                else:
                    result = _sample(pipe, config, setting, seed, image=sample["views"][0:1],
                                     elevation=sample["elevation"], distance=sample["distance"])
                    views = result.frames[0].to(device).float()
                    scores = score_image_to_multiview(views, sample["views"].to(device), networks)
                    if references is not None:
                        scores.update(_geometry(result, views, references[sample["uid"]], log))
                    name = sample["uid"]
                row = {"setting": setting, "sample": index, "name": name, "seed": seed, **scores,
                       "seconds": time.perf_counter() - start}
                rows.append(row)
                grids.append(to_uint8(views.cpu()))
                log(f"[{index + 1}/{len(samples)}] {setting:8s} {name[:40]!r} "
                    + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            mlflow.log_image(np.asarray(grid_image(np.concatenate(grids))), f"grids/sample-{index:03d}.png")
        summary = _summarise(rows, config.settings)
        result = EvaluationResult(task, rows, summary)
        for setting, metrics in summary.items():
            mlflow.log_metrics({f"{setting}/{metric}": value for metric, value in metrics.items()
                                if math.isfinite(value)})
        files = {"results.csv": _csv(rows), "table.md": result.table() + "\n"}
        for name, text in files.items():
            mlflow.log_text(text, name)
    if config.output:
        os.makedirs(config.output, exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(config.output, name), "w", encoding="utf-8") as handle:
                handle.write(text)
    return result
