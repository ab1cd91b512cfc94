"""Per-scene fitting of 3D Gaussians to posed views: the evaluation's novel-view-synthesis step.

The paper fits a neural field to 12 of the 24 generated views and scores the other 12; we fit 3D
Gaussians with the project's renderer (``models.gaussians.rendering``, same conventions as gsplat),
by Adam on 0.8 L1 + 0.2 (1 - SSIM) as in 3DGS, without densification (a fixed count).

Initialisation: N random Gaussians uniform in a ball (the same for every scene with one seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.gaussians.rendering import render_batch
from models.gaussians.gaussians import Gaussians
from models.metrics.image import ssim

SSIM_WEIGHT = 0.2


@dataclass
class FitConfig:
    """The evaluation's Gaussian fit (``metadata["help"]`` is the command-line help)."""

    steps: int = field(default=300, metadata={"help": "Gaussian fitting steps"})
    num_gaussians: int = field(default=8192, metadata={"help": "Gaussians fitted (random initialisation)"})
    radius: float = field(default=0.6, metadata={
        "help": "radius of the initial ball, world units (objects are normalised to a unit box)"})
    views_per_step: int = field(default=4, metadata={"help": "views per fitting step"})
    lr_means: float = field(default=2e-3, metadata={"help": "Adam learning rate of the means"})
    lr_scales: float = field(default=5e-3, metadata={"help": "Adam learning rate of the log-scales"})
    lr_quats: float = field(default=1e-3, metadata={"help": "Adam learning rate of the rotations"})
    lr_opacities: float = field(default=5e-2, metadata={"help": "Adam learning rate of the opacities"})
    lr_colors: float = field(default=1e-2, metadata={"help": "Adam learning rate of the colours"})
    seed: int = field(default=0, metadata={"help": "seed of the initial Gaussians"})

    def __post_init__(self) -> None:
        if self.steps < 0:  # 0: the initial Gaussians (a control of the fit)
            raise ValueError(f"steps must be 0 or more, got {self.steps}")
        for name in ("num_gaussians", "views_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("radius", "lr_means", "lr_scales", "lr_quats", "lr_opacities", "lr_colors"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def random_gaussians(count: int, radius: float, seed: int = 0) -> Gaussians:
    """``count`` isotropic grey Gaussians uniform in a ball, sized to tile it, opacity 0.1."""
    generator = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(count, 3, generator=generator, device=generator.device), dim=-1)
    means = directions * radius * torch.rand(count, 1, generator=generator, device=generator.device) ** (1 / 3)
    spacing = (4 / 3 * math.pi * radius**3 / count) ** (1 / 3)
    return Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).expand(count, 4).clone(),
                     scales=torch.full((count, 3), spacing / 2), opacities=torch.full((count,), 0.1),
                     colors=torch.full((count, 3), 0.5))


def fit_gaussians(views: torch.Tensor, c2w: torch.Tensor, fov: float, background: tuple[float, float, float],
                  config: FitConfig | None = None, masks: torch.Tensor | None = None) -> Gaussians:
    """Fit one scene's Gaussians to ``views``.

    Args:
        views: [V, 3, H, W] in [0, 1] (square), composited on ``background``.
        c2w: [V, 4, 4] OpenGL camera-to-world (``camera`` module); fov: vertical, degrees.
        masks: optional [V, 1, H, W] object alphas in [0, 1]; with them the loss adds LGM's MSE on
            alpha, so that no background-coloured Gaussian hides in front of the background (what
            a mesh of the Gaussians would keep as geometry).
    Returns:
        unbatched fitted Gaussians (detached), in the frame of ``c2w``.
    """
    config = config or FitConfig()
    start = random_gaussians(config.num_gaussians, config.radius, config.seed).to(views.device)
    eps = 1e-4
    raw = {
        "means": start.means.clone(),
        "quats": start.quats.clone(),
        "scales": start.scales.clamp(min=eps).log(),
        "opacities": torch.logit(start.opacities.clamp(eps, 1 - eps)),
        "colors": torch.logit(start.colors.clamp(eps, 1 - eps)),
    }
    for tensor in raw.values():
        tensor.requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [raw[name]], "lr": getattr(config, f"lr_{name}")} for name in raw],
                                 eps=1e-15)

    def activated() -> Gaussians:
        return Gaussians(means=raw["means"], quats=F.normalize(raw["quats"], dim=-1), scales=raw["scales"].exp(),
                         opacities=torch.sigmoid(raw["opacities"]), colors=torch.sigmoid(raw["colors"]))

    generator = torch.Generator().manual_seed(config.seed)
    size = views.shape[-1]
    for _ in range(config.steps):
        chosen = torch.randperm(len(views), generator=generator, device=generator.device)[: config.views_per_step]
        gaussians = activated()
        rendered, alphas = render_batch(gaussians.as_batch(), c2w[chosen][None], fov, size, background)
        rendered, target = rendered[0], views[chosen]
        loss = (1 - SSIM_WEIGHT) * (rendered - target).abs().mean() + SSIM_WEIGHT * (1 - ssim(rendered, target).mean())
        if masks is not None:
            loss = loss + F.mse_loss(alphas[0], masks[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return activated().detach()
