"""Multi-view score distillation at toy scale, against controls (docs/distillation.md).

G is the miniature ``make run`` trains (``out/runs/finetune/final_model``). The Duck's caption is
distilled into Gaussians with the ``toy`` preset; the Gaussians are rendered at G's 24 orbit
cameras and scored against the Duck rendered by Blender there (PSNR, margin over the other bundled
objects, view accuracy: ``pipeline.evaluation.result_scores``), and their mesh against the Duck's
mesh (Chamfer distance). Controls, same settings and seed: G's camera input zeroed (the Janus
check: view accuracy must drop), a random prompt, another bundled object's caption (the prompt
steers: the target's scores must drop), and the initial Gaussians (no step).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import camera
from models.distillation.config import PRESETS, preset
from pipeline.cli import option
from pipeline.data.sources import BUNDLED_ASSETS, captioned_assets

logger = logging.getLogger(__name__)
SETTINGS = ("distilled", "camera input zeroed", "random prompt", "another object's prompt", "initial Gaussians")


@dataclass
class DistillationExperimentConfig:
    """The experiment's settings (``benchmarks/distillation.py`` makes them flags)."""

    model: str = option("out/runs/finetune/final_model", "G: the miniature make run trains")
    target: str = option("Duck.glb", "the bundled object whose caption is distilled")
    assets: str = option(BUNDLED_ASSETS, "folder of the objects and captions.csv")
    random_prompt: str = option("zqx florp vantablack", "the random-prompt control's prompt")
    preset: str = option("toy", "distillation settings", choices=tuple(PRESETS))
    steps: int | None = option(None, "optimisation steps (default: the preset's)")
    loss: str | None = option(None, "the distillation loss (default: the preset's)")
    elevation: float = option(15.0, "elevation of the scoring orbit (make run's)")
    samples: int = option(8, "Cycles samples of the ground truth")
    settings: tuple[str, ...] = option(SETTINGS, "the run and the controls", choices=SETTINGS)
    mesh: bool = option(True, "also mesh the Gaussians and score the mesh (Chamfer)")


def run_distillation_experiment(config: DistillationExperimentConfig) -> dict[str, Any]:
    """Distil, score, and the controls; returns {"rows": [{"setting", scores...}], "seconds", "config"}."""
    from models.distillation.distill import Distillation
    from models.pipeline_videomv.pipeline_videomv import load_pipeline
    from pipeline.evaluation.result_scores import score_generation, score_mesh

    pipe = load_pipeline(config.model)
    pipe.set_progress_bar_config(disable=True)
    objects = captioned_assets(config.assets, os.path.join(config.assets, "captions.csv"))
    assets = {name: path for name, (path, _) in objects.items()}
    if config.target not in objects:
        raise ValueError(f"{config.target} is not a captioned object of {config.assets}: {sorted(objects)}")
    caption = objects[config.target][1]
    other_caption = next(text for name, (_, text) in objects.items() if name != config.target)
    settings = preset(config.preset, **{name: value for name, value in (("steps", config.steps), ("loss", config.loss))
                                        if value is not None})
    rows, seconds = [], {}
    for setting in config.settings:
        began = time.perf_counter()
        changes = {"steps": 0} if setting == "initial Gaussians" else \
            {"zero_cameras": True} if setting == "camera input zeroed" else {}
        prompt = {"random prompt": config.random_prompt, "another object's prompt": other_caption}.get(setting, caption)
        run = Distillation(pipe, dataclasses.replace(settings, **changes), prompt=prompt)
        while not run.finished:
            metrics = run.step()
            if run.step_index % 50 == 0:
                logger.info("%s: step %d/%d, loss %.4g, t %d", setting, run.step_index, run.config.steps,
                            metrics["loss"], metrics["timestep"])
        c2w = run.orbit(config.elevation)
        with torch.no_grad():
            views = run.render(run.gaussians(), c2w).clamp(0, 1).cpu()
        row = {"setting": setting, **score_generation(
            views, assets, config.target, config.elevation, np.asarray(run.azimuths), run.distance, run.fov,
            run.resolution, pipe.background, samples=config.samples)}
        if config.mesh:
            from models.mesh.from_gaussians import mesh_from_gaussians
            from models.mesh.fusion import MeshingError

            try:
                made = mesh_from_gaussians(run.gaussians().to("cpu"), views, c2w.cpu(), fov=run.fov)
                row.update(score_mesh(made.watertight, assets, config.target))
            except MeshingError as error:
                logger.warning("%s: no mesh (%s)", setting, error)
        seconds[setting] = time.perf_counter() - began
        logger.info("%s: PSNR %.2f dB, view accuracy %.1f %%, margin %.2f dB, Chamfer %s (%.0f s)", setting,
                    row["psnr"], 100 * row["view_accuracy"], row["margin_db"],
                    f"{row['mesh_chamfer']:.4f}" if "mesh_chamfer" in row else "-", seconds[setting])
        rows.append(row)
    return {"rows": rows, "seconds": seconds, "config": dataclasses.asdict(config),
            "distill": dataclasses.asdict(settings), "caption": caption,
            "cameras": {"elevation": config.elevation, "frames": len(camera.orbit_azimuths(pipe.num_frames))}}


def format_table(result: dict[str, Any]) -> str:
    lines = ["| setting | PSNR vs target | margin over other objects | view accuracy | mesh Chamfer |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        chamfer = f"{row['mesh_chamfer']:.4f}" if "mesh_chamfer" in row else "-"
        lines.append(f"| {row['setting']} | {row['psnr']:.2f} dB | {row['margin_db']:.2f} dB | "
                     f"{100 * row['view_accuracy']:.1f} % | {chamfer} |")
    return "\n".join(lines)
