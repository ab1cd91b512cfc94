"""Calibrating the evaluation's 12/12 Gaussian fit on ground truth (issue 14).

The paper's text-to-multi-view score fits a 3D representation to the 12 even views and scores the
12 odd ones. That score can only tell consistent from inconsistent views if the fitter, given
perfectly consistent views, scores high, and scores less as the views grow inconsistent. Here the
views are Blender renders of one object whose azimuths are jittered by a fixed amount per view
(random sign, the same signs at every level), while the fit is told the nominal orbit cameras: as a
generator's slightly misplaced views would be. ``fit_calibration`` returns the 12/12 scores per level.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

import camera
from models.metrics.scores import MetricNetworks
from models.gaussians.fit import FitConfig
from models.variants import VARIANTS
from pipeline.evaluation.sample_scores import score_text_to_multiview
from pipeline.evaluation.ground_truth import render_views
from render.process import BlenderProcess
from render.settings import RenderSettings

logger = logging.getLogger(__name__)


@dataclass
class CalibrationRow:
    jitter_deg: float
    psnr: float
    ssim: float
    seconds: float


def fit_calibration(asset: str, resolution: int, jitters: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0),
                    fit: FitConfig | None = None, elevation: float = 15.0, samples: int = 8,
                    background: tuple[float, float, float] = VARIANTS["t2v"].background,
                    seed: int = 0) -> list[CalibrationRow]:
    """12/12 held-out PSNR/SSIM of the Gaussian fit on ``asset``'s orbit, per azimuth jitter (degrees).

    Every view v is rendered at azimuth ``15 v + s_v * jitter`` (s_v = +-1, drawn once from ``seed``)
    and fitted/scored as if it were at ``15 v``.
    """
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=camera.NUM_VIEWS)
    azimuths = camera.orbit_azimuths()
    nominal = torch.tensor(camera.orbit_c2w(elevation, azimuths), dtype=torch.float32)
    settings = RenderSettings(resolution=resolution, samples=samples, threads=2)
    rows = []
    with BlenderProcess() as process:
        for jitter in jitters:
            views, _ = render_views(process, asset, elevation, azimuths + signs * jitter, settings, background)
            start = time.perf_counter()
            scores = score_text_to_multiview("", views / 2 + 0.5, nominal, camera.DEFAULT_FOV_DEG, background,
                                             MetricNetworks(), fit)
            rows.append(CalibrationRow(jitter, scores["psnr"], scores["ssim"], time.perf_counter() - start))
            logger.info("jitter %.1f deg: 12/12 PSNR %.2f dB, SSIM %.3f (fit %.0f s)", jitter, scores["psnr"],
                        scores["ssim"], rows[-1].seconds)
    return rows
