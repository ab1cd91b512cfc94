"""One training step of the reconstructor, and a single-object overfitting check.

The step follows VideoMV's recipe: 4 input views (the orthogonal frames 0, 6, 12, 18 at inference,
random ones in training), Gaussians rendered at every view, all views supervised with
``ReconstructionLoss``, backgrounds composited with the same colour on both sides. Gaussians are
rendered at the targets' own resolution (at most ``output_size``): targets are never upsampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import camera
from models.metrics import image as metrics
from models.gaussians.rendering import render_batch
from models.reconstructor.model import LGM
from models.reconstructor.loss import ReconstructionLoss

ORTHOGONAL_VIEWS = (0, 6, 12, 18)  # azimuths 0, 90, 180, 270 of a 24-view orbit


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of a whole batch of images in [0, 1] taken together (one mean squared error)."""
    return float(metrics.psnr(prediction.reshape(1, -1), target.reshape(1, -1))[0])


def reconstruction_step(
    model: LGM,
    loss_fn: ReconstructionLoss,
    views: torch.Tensor,
    alphas: torch.Tensor,
    c2w: torch.Tensor,
    input_views: tuple[int, ...] | torch.Tensor,
    supervised_views: tuple[int, ...] | torch.Tensor | None,
    background: tuple[float, float, float],
    network: torch.nn.Module | None = None,
    fov: float = camera.DEFAULT_FOV_DEG,
    input_images: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Forward and loss for one batch (call ``backward`` on ``terms["loss"]`` yourself).

    Args:
        views: [B, V, 3, H, W] RGB in [0, 1], composited on ``background``: the targets, and the
            model's inputs (at ``input_views``) unless ``input_images`` are given.
        alphas: [B, V, 1, H, W] foreground masks in [0, 1].
        c2w: [B, V, 4, 4] OpenGL camera-to-world of every view.
        input_views: the 4 view indices given to the model.
        supervised_views: view indices rendered and supervised (None: all).
        network: the module to run instead of ``model`` (its DDP wrapper in training).
        fov: the views' vertical field of view in degrees.
        input_images: [B, 4, 3, h, w] in [0, 1] given to the model instead of ``views[:, input_views]``
            (training: G's one-step predictions at those views, while every supervised view is
            compared with the ground truth); any resolution, resized to the model's input size.
    Returns:
        (loss terms, rendered RGB [B, S, 3, h, w], target RGB [B, S, 3, h, w]) where h = w =
        min(H, ``model.options.output_size``): the targets' own resolution, or downsampled to
        ``output_size`` (never upsampled).
    """
    inputs = torch.as_tensor(input_views, device=views.device)
    supervised = torch.arange(views.shape[1], device=views.device) if supervised_views is None else \
        torch.as_tensor(supervised_views, device=views.device)
    images = views[:, inputs] if input_images is None else input_images
    if images.shape[:2] != (views.shape[0], len(inputs)):
        raise ValueError(f"input_images must be [B={views.shape[0]}, {len(inputs)}, 3, h, w], got {tuple(images.shape)}")
    network_inputs, transforms = model.prepare_inputs(images, c2w[:, inputs], fov)
    gaussians = (network or model)(network_inputs)
    cameras = model.normalise_cameras(transforms, c2w[:, supervised].float(), fov)
    size = min(views.shape[-1], model.options.output_size)
    rgb, alpha = render_batch(gaussians, cameras, model.options.fov, size, background)
    target_rgb = downsample(views[:, supervised].float(), size)
    target_alpha = downsample(alphas[:, supervised].float(), size)
    return loss_fn(rgb, alpha, target_rgb, target_alpha), rgb, target_rgb


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, V, C, H, W] -> [B, V, C, size, size] (antialiased; unchanged when already that size)."""
    if images.shape[-1] == size:
        return images
    resized = F.interpolate(images.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized.unflatten(0, images.shape[:2])


@dataclass
class OverfitResult:
    steps: int
    psnr_before: float
    psnr_after: float
    losses: list[float]


def overfit_one_object(
    model: LGM,
    views: torch.Tensor,
    alphas: torch.Tensor,
    c2w: torch.Tensor,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    steps: int = 60,
    lr: float = 2e-3,
    views_per_step: int = 8,
    seed: int = 0,
    fov: float = camera.DEFAULT_FOV_DEG,
) -> OverfitResult:
    """Train ``model`` on one object; PSNR is measured on the views that are not inputs.

    Args:
        views: [V, 3, H, W] in [0, 1] composited on ``background``; alphas [V, 1, H, W]; c2w [V, 4, 4].
        views_per_step: supervised views drawn at random per step (all V when >= V).
        fov: the views' vertical field of view in degrees.
    """
    generator = torch.Generator().manual_seed(seed)
    views, alphas, c2w = views[None], alphas[None], c2w[None]
    held_out = tuple(i for i in range(views.shape[1]) if i not in ORTHOGONAL_VIEWS)
    loss_fn = ReconstructionLoss(None)

    def held_out_psnr() -> float:
        with torch.no_grad():
            _, rgb, target = reconstruction_step(model, loss_fn, views, alphas, c2w, ORTHOGONAL_VIEWS, held_out,
                                                 background, fov=fov)
        return psnr(rgb, target)

    before = held_out_psnr()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        supervised = torch.randperm(views.shape[1], generator=generator, device=generator.device)[:views_per_step]
        terms, _, _ = reconstruction_step(model, loss_fn, views, alphas, c2w, ORTHOGONAL_VIEWS, supervised, background,
                                          fov=fov)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    return OverfitResult(steps, before, held_out_psnr(), losses)
