"""The distillation job (``jobs/distill.py``): a prompt or an image -> 3D Gaussians by multi-view
score distillation with a frozen G (``models.distillation``), with checkpoints and resume,
progress with an ETA, MLflow (loss, t, orbit renders) and the endpoint's outputs (PLY, .splat,
GLB, orbit MP4)."""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from models.distillation.config import PRESETS, DistillConfig
from models.mesh.fusion import MeshOptions
from models.precision import DTYPE_CHOICES
from pipeline.cli import check_minimums, option
from pipeline.tracking import ARTIFACTS_HELP

logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


@dataclass
class DistillJobConfig:
    """Everything ``jobs/distill.py`` exposes as flags (``pipeline.cli``); the distillation's own
    settings start from ``--preset``."""
    LOCATIONS = {"model": "input", "image": "input", "output": "output", "mlflow_uri": "tracking",
                 "mlflow_artifacts": "output"}  # paths (pipeline.submission)

    model: str = option(help="G: diffusers-layout directory or URI of the multi-view model (frozen)")
    output: str = option(help="folder for the checkpoints and the outputs (gaussians.ply, .splat, mesh.glb, "
                              "orbit.mp4); a run there is resumed")
    prompt: str | None = option(None, "what to distil (the text model)")
    image: str | None = option(None, "condition image file (the image model)")
    negative_prompt: str | None = option(None, "what guidance guides against (default: the one G was fine-tuned with)")
    preset: str = option("mvdream", "settings the flags below start from", choices=tuple(PRESETS))
    distill: DistillConfig = field(default_factory=DistillConfig, metadata={"prefix": ""})
    checkpoint_every: int = option(500, "steps between checkpoints (the last two are kept)", minimum=1)
    log_every: int = option(50, "steps between progress lines and MLflow metrics", minimum=1)
    render_every: int = option(500, "steps between orbit renders logged to MLflow (0: none)", minimum=0)
    resume: bool = option(True, "continue from the newest checkpoint in --output")
    mesh: bool = option(True, "also write mesh.glb (models.mesh)")
    dtype: str = option("auto", "G's precision (auto: fp16 on a GPU, fp32 on a CPU)", choices=DTYPE_CHOICES)
    experiment: str = option("videomv-distill", "MLflow experiment")
    mlflow_uri: str | None = option(None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    mlflow_artifacts: str | None = option(None, ARTIFACTS_HELP)
    run_name: str | None = option(None, "MLflow run name")

    def __post_init__(self) -> None:
        check_minimums(self)
        if (self.prompt is None) == (self.image is None):
            raise ValueError("give a prompt (text model) or an image (image model), not both")


@dataclass
class DistillResult:
    """Where the outputs are, and the run's last figures."""

    output: str
    files: dict[str, str]
    steps: int
    seconds: float
    last_loss: float


def latest_checkpoint(output: str) -> str | None:
    """The newest ``checkpoints/step-*.pt`` under ``output`` (None when there is none)."""
    found = sorted(glob.glob(os.path.join(output, CHECKPOINTS, "step-*.pt")))
    return found[-1] if found else None


def save_checkpoint(run: Any, output: str, keep: int = 2) -> str:
    """Write the run's state atomically (a temporary file renamed), keep the newest ``keep``."""
    folder = os.path.join(output, CHECKPOINTS)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step-{run.step_index:07d}.pt")
    torch.save(run.state_dict(), path + ".partial")
    os.replace(path + ".partial", path)
    for old in sorted(glob.glob(os.path.join(folder, "step-*.pt")))[:-keep]:
        os.remove(old)
    return path


def write_outputs(run: Any, output: str, mesh: bool = True) -> dict[str, str]:
    """The endpoint's outputs of the current scene: gaussians.ply, gaussians.splat, orbit.mp4 (the
    scene at G's orbit), mesh.glb (``mesh``)."""
    from models.gaussians.ply import save_ply, save_splat
    from pipeline.serve.media import orbit_mp4

    os.makedirs(output, exist_ok=True)
    gaussians = run.gaussians().to("cpu")
    files = {"ply": os.path.join(output, "gaussians.ply"), "splat": os.path.join(output, "gaussians.splat"),
             "mp4": os.path.join(output, "orbit.mp4")}
    save_ply(gaussians, files["ply"])
    save_splat(gaussians, files["splat"])
    views, c2w = run.orbit_views()
    with open(files["mp4"], "wb") as handle:
        handle.write(orbit_mp4(views.cpu()))
    if mesh:
        from models.mesh.from_gaussians import mesh_from_gaussians, write_glb
        from models.mesh.fusion import MeshingError

        try:
            made = mesh_from_gaussians(gaussians, views.cpu(), c2w.cpu(), MeshOptions(), fov=run.fov)
        except MeshingError as error:  # nothing opaque yet: say so, keep the other outputs
            logger.warning("no mesh: %s", error)
        else:
            files["glb"] = os.path.join(output, "mesh.glb")
            write_glb(made.textured, files["glb"])
    return files


def distill(config: DistillJobConfig) -> DistillResult:
    """Run (or resume) one distillation; returns where its outputs are."""
    from PIL import Image

    from models.distillation.distill import Distillation, seconds_left
    from models.pipeline_videomv.pipeline_videomv import load_pipeline
    from pipeline.serve.media import grid_image
    from pipeline.tracking import mlflow_run, tracking_uri

    pipe = load_pipeline(config.model, tracking_uri=tracking_uri(config.mlflow_uri), dtype=config.dtype)
    pipe.set_progress_bar_config(disable=True)
    image = None if config.image is None else Image.open(config.image).convert("RGB")
    run = Distillation(pipe, config.distill, prompt=config.prompt, image=image, negative_prompt=config.negative_prompt)
    checkpoint = latest_checkpoint(config.output) if config.resume else None
    if checkpoint:
        run.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False))
        logger.info("resumed from %s (step %d of %d)", checkpoint, run.step_index, config.distill.steps)
    params = {**{k: v for k, v in dataclasses.asdict(config).items() if k != "distill"},
              **dataclasses.asdict(config.distill), "device": str(pipe.device), "resumed_at": run.step_index}
    start, first, loss = time.perf_counter(), run.step_index, float("nan")
    logger.info("distilling %r with %s: %d steps, %d Gaussians, %d views at %d px, elevations %s, on %s",
                config.prompt or config.image, os.path.basename(config.model.rstrip("/")), config.distill.steps,
                config.distill.num_gaussians, pipe.num_frames, run.resolution, run.elevations, pipe.device)
    with mlflow_run(config.experiment, config.run_name, config.mlflow_uri, params, config.mlflow_artifacts) as mlflow:
        while not run.finished:
            metrics = run.step()
            loss, step = metrics["loss"], run.step_index
            if step % config.log_every == 0 or run.finished:
                elapsed = time.perf_counter() - start
                eta = seconds_left(step - first, config.distill.steps - first, elapsed)
                logger.info("step %d/%d: loss %.4g, t %d, %.2f s/step, ETA %.0f s", step, config.distill.steps,
                            loss, metrics["timestep"], elapsed / (step - first), eta)
                mlflow.log_metrics({"loss": loss, "timestep": metrics["timestep"], "elevation": metrics["elevation"]},
                                   step=step)
            if config.render_every and (step % config.render_every == 0 or run.finished):
                views, _ = run.orbit_views()
                mlflow.log_image(grid_image(views.cpu()), f"renders/step-{step:07d}.png")
            if step % config.checkpoint_every == 0 or run.finished:
                save_checkpoint(run, config.output)
        files = write_outputs(run, config.output, config.mesh)
        for path in files.values():
            mlflow.log_artifact(path, "outputs")
    seconds = time.perf_counter() - start
    logger.info("distilled in %.0f s (%d steps this run): %s", seconds, run.step_index - first,
                ", ".join(os.path.basename(path) for path in files.values()))
    return DistillResult(output=config.output, files=files, steps=run.step_index, seconds=seconds, last_loss=loss)
