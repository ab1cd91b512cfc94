"""How good is a generated orbit? Scores against the prompted object's own renders.

The prompted object is rendered by the render stage's renderer (Blender) at exactly the generated
cameras; every generated view is scored against its render (PSNR, SSIM at the render resolution,
generated views upsampled bilinearly when the model is smaller), and against every other object
rendered the same way (a model that draws "some object" scores as well against those). View
accuracy: the share of generated views whose best-matching render of the prompted object (by
PSNR) is within one azimuth step of their own camera. The Gaussians the sampler returns are
rendered at the same cameras and scored the same way. The mesh made from them is scored against
the prompted object's own mesh (``models.metrics.geometry``: Chamfer distance, F-score, volume
IoU), next to the same scores against every other object and against a sphere stretched to the
prompted object's bounding box (a blob of the right size: what a model that knows only the
silhouette's extent would give).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import camera
from models.gaussians.rendering import render_gaussians
from models.gaussians.gaussians import Gaussians
from models.metrics.geometry import geometry_scores
from models.metrics.image import psnr
from pipeline.evaluation.ground_truth import render_views, scores
from render.process import BlenderProcess
from render.settings import RenderSettings

logger = logging.getLogger(__name__)


def view_accuracy(generated: torch.Tensor, truth: torch.Tensor, tolerance: int = 1) -> float:
    """Share of generated views [F, 3, H, W] whose best-matching truth view (of the same orbit,
    [F, 3, H, W]) is within ``tolerance`` azimuth steps (circularly)."""
    frames = len(truth)
    table = torch.stack([psnr(view[None].expand_as(truth), truth) for view in generated])  # [F, F]
    best = table.argmax(dim=1)
    distance = (best - torch.arange(frames)).abs()
    distance = torch.minimum(distance, frames - distance)
    return float((distance <= tolerance).float().mean())


def score_generation(views: torch.Tensor, assets: dict[str, str], target: str, elevation: float,
                     azimuths: np.ndarray, distance: float, fov: float, resolution: int,
                     background: tuple[float, float, float],
                     gaussians: Gaussians | None = None, samples: int = 8) -> dict[str, float]:
    """Score generated views [F, 3, h, w] in [0, 1] of ``target`` (a key of ``assets``: name -> file).

    Returns psnr, ssim, psnr_vs_<other> for every other object, margin_db (psnr minus the best of
    those), view_accuracy and, with ``gaussians`` (world frame), gaussians_psnr / gaussians_ssim.
    """
    settings = RenderSettings(resolution=resolution, samples=samples, distance=distance, fov=fov, threads=2)
    with BlenderProcess() as process:
        truths = {name: render_views(process, path, elevation, azimuths, settings, background)
                  for name, path in assets.items()}
    truth, c2w = truths[target][0] / 2 + 0.5, truths[target][1]
    generated = views.float()
    if generated.shape[-1] != resolution:
        generated = F.interpolate(generated, size=(resolution, resolution), mode="bilinear", align_corners=False)
    result = scores(generated, truth)
    others = {name: scores(generated, views_ / 2 + 0.5)["psnr"] for name, (views_, _) in truths.items()
              if name != target}
    result.update({f"psnr_vs_{name}": value for name, value in others.items()})
    result["margin_db"] = result["psnr"] - max(others.values()) if others else float("nan")
    result["view_accuracy"] = view_accuracy(generated, truth)
    if gaussians is not None:
        intrinsics = torch.tensor(camera.intrinsics_from_fov(fov, resolution, resolution), dtype=torch.float32)
        with torch.no_grad():
            rendered = render_gaussians(gaussians, c2w, intrinsics, resolution, resolution,
                                        background=background, backend="torch").colors
        gaussian_scores = scores(rendered.permute(0, 3, 1, 2).clamp(0, 1), truth)
        result.update({"gaussians_psnr": gaussian_scores["psnr"], "gaussians_ssim": gaussian_scores["ssim"]})
    return result


def reference_meshes(assets: dict[str, str]) -> dict[str, Any]:
    """name -> the asset's mesh as the renders show it (Blender's import, normalised into the unit
    cube, project world frame), as ``trimesh.Trimesh``."""
    import trimesh

    with BlenderProcess() as process:
        return {name: trimesh.Trimesh(*process.world_mesh(path), process=False) for name, path in assets.items()}


def score_mesh(mesh: Any, assets: dict[str, str], target: str) -> dict[str, float]:
    """Geometry scores of a generated mesh (``trimesh.Trimesh``, world frame) of ``target`` (a key
    of ``assets``: name -> file).

    Returns mesh_chamfer, mesh_fscore, mesh_volume_iou against the target; mesh_chamfer_vs_<other>
    for every other object and mesh_chamfer_vs_sphere (the sphere stretched to the target's
    bounding box); mesh_chamfer_ratio: the closest of those controls over the target's Chamfer
    distance (above 1: nearer the prompted object than any control).
    """
    import trimesh

    truths = reference_meshes(assets)
    result = {f"mesh_{name}": value for name, value in geometry_scores(mesh, truths[target]).items()}
    controls = {name: truth for name, truth in truths.items() if name != target}
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    sphere.apply_scale(truths[target].extents)
    controls["sphere"] = sphere
    for name, control in controls.items():
        result[f"mesh_chamfer_vs_{name}"] = geometry_scores(mesh, control)["chamfer"]
    result["mesh_chamfer_ratio"] = min(result[f"mesh_chamfer_vs_{name}"] for name in controls) / result["mesh_chamfer"]
    return result
