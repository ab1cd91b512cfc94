"""Does 3D-aware denoising help the trained miniature? Plain DDIM against the paper's two forms.

On the main job's outputs (G fine-tuned on the bundled objects, the reconstructor trained on its
one-step predictions), for every captioned bundled object and seed:

- ``renders_vs_x0``: on held-out Blender orbits (the training elevation, azimuths shifted by half a
  step: cameras neither model trained on), G's one-step x0 at t = 581, 381, 181 against
  render(LGM(x0 at views 0/6/12/18)), both scored against the truth on the other 20 views
  (``models.pipeline_videomv.one_step``);
- the paper's protocol for plain DDIM, the authors' 3D-aware form (two reconstructions per step)
  and the one-reconstruction form, same seeds and the same 3D-aware steps (indices 20, 30, 40 of
  50): Gaussians fitted to the 12 even views scored on the 12 odd ones (PSNR/SSIM, and LPIPS with
  its weights), flow-warping RMSE at intervals 1 and 6 (with RAFT weights), wall time; and, since
  the bundled objects have a truth, PSNR/SSIM of the views against Blender's renders at the
  generated cameras (``truth_psnr``, ``truth_ssim``).

``run_three_d_aware`` returns the JSON of ``benchmarks/three_d_aware_gain.py``; a score whose network
weights were not given is null.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import camera
from models.metrics.scores import MetricNetworks
from models.gaussians.fit import FitConfig
from models.pipeline_videomv.pipeline_videomv import load_pipeline
from models.prompts import with_suffix
from pipeline.evaluation.sample_scores import score_text_to_multiview
from pipeline.experiments.sampling import SamplingConfig
from models.pipeline_videomv.three_d_aware import reconstruction_steps
from models.variants import VARIANTS
from models.reconstructor.renders_vs_x0 import RendersVsX0
from pipeline.cli import option
from pipeline.evaluation.ground_truth import scores
from pipeline.data.sources import BUNDLED_ASSETS, captioned_assets
from pipeline.evaluation.reconstruction_schedule import held_out_renders_vs_x0, truth_orbits

logger = logging.getLogger(__name__)
FORMS = {"plain": ("none", "one"), "three_d_aware_two": ("authors", "two"), "three_d_aware_one": ("authors", "one")}


@dataclass
class ThreeDAwareConfig:
    """Settings of ``benchmarks/three_d_aware_gain.py`` (its flags)."""

    model: str = option(os.path.join("out", "runs", "finetune", "final_model"), "fine-tuned G (the main job's)")
    reconstructor: str = option(os.path.join("out", "runs", "reconstructor", "final_model"),
                                "the reconstructor trained on G's predictions (the main job's)")
    assets: str = option(BUNDLED_ASSETS, "folder of the objects and their captions.csv")
    seeds: tuple[int, ...] = option((0, 1), "sampling seeds per object")
    num_inference_steps: int = option(50, "DDIM steps (3D-aware at indices 20, 30, 40 of 50, scaled)",
                                      deprecated_alias="steps")
    guidance_scale: float = option(1.0, "classifier-free guidance (the miniature's: docs/results.md)")
    samples: int = option(8, "Cycles samples per pixel of the truth renders")
    fit_steps: int = option(FitConfig.steps, "steps of the 12/12 Gaussian fit")
    fit_num_gaussians: int = option(FitConfig.num_gaussians, "Gaussians of the 12/12 fit (CPU: 2048 takes about "
                                                             "0.45 s per step at 64 px, 8192 about 1.5 s)")
    lpips_vgg: str | None = option(None, "torchvision VGG16 weights (.pth) for LPIPS")
    lpips_lin: str | None = option(None, "lpips 'lin' weights (vgg.pth) for LPIPS "
                                         "(default: torchmetrics' bundled copy)")
    raft: str | None = option(None, "RAFT weights for the flow-warping RMSE")
    write_schedule: bool = option(False, "save the renders-vs-x0 measurement beside the reconstructor "
                                         "(three_d_aware.json): the sampler then skips the steps where renders lose")


def _mean(rows: list[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return float(np.mean(values)) if values else None


def run_three_d_aware(config: ThreeDAwareConfig) -> dict[str, Any]:
    """The benchmark's figures (module docstring); the reconstructor's own measured schedule, if it
    carries one, is set aside so that every form reconstructs at the same steps."""
    pipe = load_pipeline(config.model, config.reconstructor)
    pipe.set_progress_bar_config(disable=True)
    model, reconstructor = pipe, pipe.reconstructor
    reconstructor.renders_vs_x0 = None
    networks = MetricNetworks.from_paths(config.lpips_vgg, config.lpips_lin, raft=config.raft)
    captioned = captioned_assets(config.assets, os.path.join(config.assets, "captions.csv"))
    assets = {name: path for name, (path, _) in captioned.items()}
    prompts = [with_suffix(caption) for _, caption in captioned.values()]
    sampling = SamplingConfig(num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale).resolved(
        model.variant, model.training_cameras)
    background = VARIANTS[model.variant].background
    azimuths = camera.orbit_azimuths(model.num_frames)
    measured = held_out_renders_vs_x0(model, reconstructor, assets, prompts, sampling.elevation, config.samples,
                                      networks.lpips)
    truth, truth_c2w = truth_orbits(assets, sampling.elevation, azimuths, model.resolution, config.samples,
                                    background)
    result: dict[str, Any] = {"renders_vs_x0": {key: value for key, value in vars(measured).items()
                                                if value is not None}}
    if config.write_schedule:
        measured.save(config.reconstructor)
        logger.info("renders-vs-x0 measurement written beside the reconstructor: %s", config.reconstructor)
    for form, (schedule, mode) in FORMS.items():
        rows, seconds = [], 0.0
        for index, prompt in enumerate(prompts):
            for seed in config.seeds:
                start = time.perf_counter()
                views = pipe(prompt=prompt, num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                             generator=torch.Generator().manual_seed(seed), elevation=sampling.elevation,
                             distance=sampling.distance, three_d_aware=reconstruction_steps(config.num_inference_steps, schedule),
                             three_d_aware_mode=mode, output_type="pt").frames[0]
                seconds += time.perf_counter() - start
                row = score_text_to_multiview(prompt, views, truth_c2w.to(views.device), camera.DEFAULT_FOV_DEG,
                                              background, networks,
                                              FitConfig(steps=config.fit_steps, num_gaussians=config.fit_num_gaussians))
                row.update({f"truth_{k}": v for k, v in scores(views.cpu(), truth[index]).items()})
                rows.append(row)
        result[form] = {
            "psnr": _mean(rows, "psnr"), "ssim": _mean(rows, "ssim"), "lpips": _mean(rows, "lpips"),
            "flow_rmse": ({f"interval_{i}": _mean(rows, f"flow_rmse_{i}") for i in (1, 6)}
                          if networks.raft is not None else None),
            "seconds": seconds / len(rows), "truth_psnr": _mean(rows, "truth_psnr"),
            "truth_ssim": _mean(rows, "truth_ssim"), "samples": len(rows)}
        logger.info("%s: 12/12 PSNR %.2f dB, truth PSNR %.2f dB, %.2f s per sample", form, result[form]["psnr"],
                    result[form]["truth_psnr"], result[form]["seconds"])
    result["settings"] = {"model": config.model, "reconstructor": config.reconstructor, "objects": list(assets),
                          "seeds": list(config.seeds), "num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
                          "elevation": sampling.elevation, "resolution": model.resolution,
                          "fit": {"steps": config.fit_steps, "num_gaussians": config.fit_num_gaussians},
                          "reconstruct_at": list(reconstruction_steps(config.num_inference_steps, "authors")),
                          "metric_networks": networks.names(),
                          "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                     f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}"}
    return result


def format_table(result: dict[str, Any]) -> str:
    """Markdown tables of the forms and of renders vs x0."""
    def cell(value: Any, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["| sampling | 12/12 PSNR | SSIM | LPIPS | flow RMSE 1 / 6 | vs truth PSNR / SSIM | s per sample |",
             "|---|---|---|---|---|---|---|"]
    for form in FORMS:
        row = result[form]
        flow = row["flow_rmse"] or {}
        lines.append(f"| {form} | {cell(row['psnr'])} dB | {cell(row['ssim'], 3)} | {cell(row['lpips'], 3)} | "
                     f"{cell(flow.get('interval_1'))} / {cell(flow.get('interval_6'))} | "
                     f"{cell(row['truth_psnr'])} dB / {cell(row['truth_ssim'], 3)} | {cell(row['seconds'])} |")
    measured = result["renders_vs_x0"]
    decision = RendersVsX0(**measured)
    lines += ["", "| t | render(LGM(x0)) PSNR / SSIM | x0 PSNR / SSIM | renders used |", "|---|---|---|---|"]
    for i, t in enumerate(measured["t"]):
        used = decision.helps(t)
        lines.append(f"| {t} | {cell(measured['render_psnr'][i])} dB / {cell(measured['render_ssim'][i], 3)} | "
                     f"{cell(measured['x0_psnr'][i])} dB / {cell(measured['x0_ssim'][i], 3)} | "
                     f"{'yes' if used else 'no'} |")
    lines.append(f"\nrender(LGM(truth)), the reconstructor's ceiling: {cell(measured.get('truth_render_psnr'))} dB")
    return "\n".join(lines)
