"""Where the reconstructor helps 3D-aware sampling, measured after it is trained: G's one-step x0
against render(LGM(x0)) on held-out Blender orbits (the training elevation, azimuths shifted by half
a step: cameras neither model trained on), at the authors' timesteps t = 581, 381, 181
(``models.pipeline_videomv.one_step``). The record (``RendersVsX0``) is saved beside the
reconstructor as ``three_d_aware.json``; the pipeline then reconstructs only where renders win.
The main job runs it after training the reconstructor (``measure_schedule``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

import camera
from models.metrics.lpips import LPIPS
from models.pipeline_videomv.one_step import AUTHORS_TIMESTEPS, measure_renders_vs_x0
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline, load_pipeline
from models.prompts import with_suffix
from models.reconstructor.model import LGM
from models.reconstructor.renders_vs_x0 import RendersVsX0
from models.variants import VARIANTS
from pipeline.evaluation.ground_truth import render_views
from render.process import BlenderProcess
from render.settings import RenderSettings

logger = logging.getLogger(__name__)


def truth_orbits(assets: dict[str, str], elevation: float, azimuths: np.ndarray, resolution: int, samples: int,
                 background: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Blender orbits of ``assets`` (name -> file): views [B, F, 3, H, W] in [0, 1] and c2w [F, 4, 4]."""
    settings = RenderSettings(resolution=resolution, samples=samples, threads=2)
    with BlenderProcess() as process:
        rendered = [render_views(process, path, elevation, azimuths, settings, background) for path in assets.values()]
    return torch.stack([views for views, _ in rendered]) / 2 + 0.5, rendered[0][1]


def held_out_renders_vs_x0(model: VideoMVPipeline, reconstructor: LGM, assets: dict[str, str], prompts: list[str],
                           elevation: float, samples: int, lpips: LPIPS | None = None) -> RendersVsX0:
    """``measure_renders_vs_x0`` at the authors' timesteps on held-out Blender orbits of ``assets``:
    ``elevation`` with every azimuth shifted by half a step (cameras neither model trained on)."""
    azimuths = camera.orbit_azimuths(model.num_frames)
    began = time.perf_counter()
    views, c2w = truth_orbits(assets, elevation, azimuths + 180.0 / len(azimuths), model.resolution, samples,
                              VARIANTS[model.variant].background)
    logger.info("held-out orbits of %d objects rendered in %.0f s", len(assets), time.perf_counter() - began)
    measured = measure_renders_vs_x0(model, reconstructor, views, c2w.expand(len(assets), -1, -1, -1), prompts,
                                     AUTHORS_TIMESTEPS, lpips=lpips)
    for t, render, x0 in zip(measured.t, measured.render_psnr, measured.x0_psnr):
        logger.info("t = %d: render(LGM(x0)) %.2f dB, x0 %.2f dB: renders %s", t, render, x0,
                    "used" if measured.helps(t) else "left out")
    logger.info("render(LGM(truth)), the reconstructor's ceiling: %.2f dB", measured.truth_render_psnr)
    return measured


def measure_schedule(model_dir: str, reconstructor_dir: str, assets: dict[str, tuple[str, str]], elevation: float,
                     samples: int) -> RendersVsX0:
    """Measure renders vs x0 on held-out orbits of ``assets`` (name -> (path, caption)) and save it
    beside the reconstructor (a local directory), where the sampler reads its 3D-aware schedule."""
    pipe = load_pipeline(model_dir, reconstructor_dir)
    paths = {name: path for name, (path, _) in assets.items()}
    measured = held_out_renders_vs_x0(pipe, pipe.reconstructor, paths,
                                      [with_suffix(caption) for _, caption in assets.values()], elevation, samples)
    measured.save(reconstructor_dir)
    return measured
