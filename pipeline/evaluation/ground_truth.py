"""Ground truth for generated views: Blender renders of an object at the generated cameras, and scores.

Used by the camera-control experiment and by the main job, which scores its generated views
against the prompted object rendered by the render stage's own renderer.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import camera
from models.metrics.image import psnr, ssim
from pipeline.data.rows import composite
from render.process import BlenderProcess
from render.settings import RenderSettings


def render_views(process: BlenderProcess, path: str, elevation: float, azimuths: np.ndarray,
                 settings: RenderSettings, background: tuple[float, float, float]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Blender views [F, 3, H, W] in [-1, 1] on a flat ``background`` (RGB in [0, 1]: the
    variant's, ``models.variants``), and their c2w [F, 4, 4]."""
    c2w = camera.orbit_c2w(elevation, azimuths, settings.distance)
    views = composite(render_rgba(process, path, c2w, settings), background) * 2.0 - 1.0
    return views, torch.tensor(c2w, dtype=torch.float32)


def render_rgba(process: BlenderProcess, path: str, c2w: np.ndarray, settings: RenderSettings) -> torch.Tensor:
    """Blender views of ``path`` at ``c2w`` [F, 4, 4]: [F, 4, H, W] RGBA in [0, 1] (straight alpha)."""
    output = process.render(path, c2w, settings)
    try:
        rgba = np.stack([np.asarray(Image.open(p).convert("RGBA"), dtype=np.float32) / 255.0 for p in output.views])
    finally:
        output.cleanup()
    return torch.from_numpy(rgba).permute(0, 3, 1, 2)


def scores(generated: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM of views [..., 3, H, W] in [0, 1] against the truth."""
    a, b = generated.reshape(-1, *generated.shape[-3:]), truth.reshape(-1, *truth.shape[-3:])
    return {"psnr": float(psnr(a, b).mean()), "ssim": float(ssim(a, b).mean())}
