"""Rays and Plücker ray maps in torch, on top of the ``camera`` module's conventions.

Cameras are OpenGL camera-to-world (``camera`` module). LGM's input is, per view, RGB (ImageNet
normalised) plus a 6-channel Plücker map: the moment ``o x d`` first, then the unit direction ``d``,
with cameras normalised so that the first input view has the identity rotation at (0, 0, r).
"""

from __future__ import annotations

import numpy as np
import torch

import camera


def camera_rays(c2w: torch.Tensor, height: int, width: int, fov_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel rays through pixel centres.

    Args:
        c2w: [V, 4, 4] OpenGL camera-to-world.
        height, width: image size; fov_deg: vertical field of view (``camera.intrinsics_from_fov``).
    Returns:
        origins [V, H, W, 3] and unit directions [V, H, W, 3], world frame.
    """
    K = camera.intrinsics_from_fov(fov_deg, width, height)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=c2w.dtype, device=c2w.device),
                            torch.arange(width, dtype=c2w.dtype, device=c2w.device), indexing="ij")
    # OpenCV pixel -> OpenGL camera direction: x right, y up, looking along -z.
    directions = torch.stack([(xs + 0.5 - K[0, 2]) / K[0, 0], -(ys + 0.5 - K[1, 2]) / K[1, 1],
                              -torch.ones_like(xs)], dim=-1)
    directions = torch.einsum("vij,hwj->vhwi", c2w[:, :3, :3], directions)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, None, :3, 3].expand_as(directions)
    return origins, directions


def plucker_rays(c2w: torch.Tensor, height: int, width: int, fov_deg: float) -> torch.Tensor:
    """[V, 4, 4] c2w -> [V, 6, H, W] Plücker maps (moment o x d, then direction d)."""
    origins, directions = camera_rays(c2w, height, width, fov_deg)
    return torch.cat([torch.cross(origins, directions, dim=-1), directions], dim=-1).permute(0, 3, 1, 2)


def normalisation_transform(c2w_first: np.ndarray | torch.Tensor, radius: float | None,
                            scene_scale: float | None = None) -> torch.Tensor:
    """Similarity transform [4, 4] ``x -> s R x + t`` of the scene into the reconstructor's frame.

    ``R = R0^T`` aligns the world with view 0. ``radius`` is where view 0 sits afterwards, at
    (0, 0, r) (None: its true distance |c0|). ``s`` is ``scene_scale`` (None: ``r / |c0|``, a
    plain similarity). ``t`` puts view 0 at (0, 0, s |c0|), so for orbits the origin stays fixed.
    With ``s != r / |c0|`` the cameras are also dollied (``apply_normalisation``'s ``dolly``).
    """
    first = torch.as_tensor(c2w_first, dtype=torch.float64)
    distance = float(first[:3, 3].norm())
    radius = distance if radius is None else radius
    scale = radius / distance if scene_scale is None else scene_scale
    rotation = first[:3, :3].T
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] = scale * rotation
    first_centre = torch.tensor([0.0, 0.0, scale * distance], dtype=torch.float64)  # view 0, before any dolly
    transform[:3, 3] = first_centre - scale * (rotation @ first[:3, 3])
    return transform


def apply_normalisation(transform: torch.Tensor, c2w: torch.Tensor, dolly: float = 1.0) -> torch.Tensor:
    """Cameras [V, 4, 4] in the normalised frame: axes rotate (stay orthonormal), centres transform
    and then move ``dolly`` times as far from the frame's origin (1: a plain similarity, which
    renders a transformed scene exactly as the original)."""
    transform = transform.to(c2w.dtype)
    scale = transform[:3, :3].norm(dim=0)[0]
    result = c2w.clone()
    result[:, :3, :3] = (transform[:3, :3] / scale) @ c2w[:, :3, :3]
    result[:, :3, 3] = dolly * (c2w[:, :3, 3] @ transform[:3, :3].T + transform[:3, 3])
    return result


def dolly_factor(data_fov_deg: float, model_fov_deg: float) -> float:
    """How much farther a camera of ``model_fov_deg`` stands than one of ``data_fov_deg`` to see the
    plane through the look-at point at the same image size: ``tan(data / 2) / tan(model / 2)``."""
    return float(np.tan(np.radians(data_fov_deg) / 2) / np.tan(np.radians(model_fov_deg) / 2))
