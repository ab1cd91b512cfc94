"""3D-aware denoising (paper 3.4): the helpers of ``VideoMVPipeline.replace_x0``, the step
``__call__`` takes at its 3D-aware steps.

At the chosen steps the predicted x0 is decoded, views 0, 6, 12, 18 go through the reconstructor,
the Gaussians are rendered at all cameras on the variant's background, re-encoded, and REPLACE x0;
the model output is recomputed from (x_t, new x0) and the step continues. Two forms:
- "two" (the authors' code): the conditional and the unconditional x0 are each reconstructed and
  guidance is applied to the two recomputed outputs (two reconstructions per step);
- "one": the guided x0 is reconstructed once.
When the views are done, the final Gaussians are reconstructed from them (in world coordinates).
A reconstructor that carries a renders-vs-x0 measurement (``models.reconstructor.renders_vs_x0``)
is used only at the steps where its renders were measured not worse than x0 (by more than 0.5 dB).
"""

from __future__ import annotations

import logging

import torch

from models.gaussians.gaussians import Gaussians
from models.gaussians.rendering import render_batch
from models.reconstructor.model import LGM

logger = logging.getLogger(__name__)
AUTHORS_STEPS = (20, 30, 40)  # step indices of 50 where the official code reconstructs (t = 581, 381, 181)
MODES = ("two", "one")


def reconstruction_steps(steps: int, schedule: str = "authors", every: int = 10, skip: int = 20) -> tuple[int, ...]:
    """Step indices (0-based) at which x0 is reconstructed.

    "authors": 20, 30, 40 of 50, scaled to ``steps``; "every": every ``every`` steps after the first
    ``skip`` (the paper's description); "none": plain DDIM.
    """
    if schedule == "none":
        return ()
    if schedule == "authors":
        return tuple(sorted({min(steps - 1, round(index * steps / 50)) for index in AUTHORS_STEPS}))
    if schedule == "every":
        return tuple(range(skip, steps, every))
    raise ValueError(f"unknown reconstruction schedule {schedule!r}: use authors, every or none")


def input_view_indices(frames: int, count: int = 4) -> tuple[int, ...]:
    """Views given to the reconstructor: evenly spaced azimuths (0, 6, 12, 18 of 24)."""
    return tuple(round(i * frames / count) for i in range(count))


def reconstruct_views(lgm: LGM, views: torch.Tensor, cameras: torch.Tensor, background: tuple[float, float, float],
                      size: int | None = None) -> tuple[torch.Tensor, Gaussians, torch.Tensor]:
    """Views [B, F, 3, H, W] in [0, 1] at ``cameras`` -> (the Gaussians rendered at every camera
    [B, F, 3, size, size], the Gaussians in the normalised frame, the normalising transforms [B, 4, 4])."""
    indices = list(input_view_indices(views.shape[1], lgm.options.num_input_views))
    return reconstruct_inputs(lgm, views[:, indices], cameras, background, size or views.shape[-1])


def reconstruct_inputs(lgm: LGM, inputs: torch.Tensor, cameras: torch.Tensor, background: tuple[float, float, float],
                       size: int) -> tuple[torch.Tensor, Gaussians, torch.Tensor]:
    """``reconstruct_views`` from the reconstructor's input views alone: ``inputs`` [B, V, 3, H, W]
    in [0, 1] are the views at ``input_view_indices(F, V)`` of ``cameras`` [B, F, 4, 4] (so that a
    3D-aware step decodes only those)."""
    indices = list(input_view_indices(cameras.shape[1], inputs.shape[1]))
    gaussians, transforms = lgm.reconstruct(inputs.float(), cameras[:, indices].float())
    rendered, _ = render_batch(gaussians, lgm.normalise_cameras(transforms, cameras.float()), lgm.options.fov,
                               size, background)
    return rendered.clamp(0, 1), gaussians, transforms


def to_world(gaussians: Gaussians, transforms: torch.Tensor) -> Gaussians:
    """Batched Gaussians from the reconstructor's normalised frames back to world coordinates."""
    scenes = [gaussians[b].transformed(torch.linalg.inv(transforms[b].double()).float()) for b in range(len(transforms))]
    return Gaussians(**{name: torch.stack([getattr(s, name) for s in scenes])
                        for name in ("means", "quats", "scales", "opacities", "colors")})


def measured_steps(reconstructor: LGM | None, steps: tuple[int, ...], timesteps: torch.Tensor) -> tuple[int, ...]:
    """``steps`` (indices into ``timesteps``) less those where the reconstructor's measurement says its
    renders are worse than x0 (all of them when it carries none)."""
    if reconstructor is None or reconstructor.renders_vs_x0 is None:
        return steps
    kept = tuple(i for i in steps if reconstructor.renders_vs_x0.helps(int(timesteps[i])))
    if kept != steps:
        left_out = [int(timesteps[i]) for i in steps if i not in kept]
        logger.info("3D-aware reconstruction left out at t = %s: the reconstructor's renders were measured worse "
                    "than x0 there", left_out)
    return kept
