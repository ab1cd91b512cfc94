"""Metrics of the paper's evaluation: PSNR, SSIM, flow-warping RMSE (LPIPS: ``models.metrics.lpips``,
CLIP score: ``models.metrics.clip_score``).

Images are [N, 3, H, W] in [0, 1]; every function returns one value per image (or image pair), [N].
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from models.metrics.warping import softmax_splat, splat_metric


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    mse = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coordinates = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    kernel = torch.exp(-coordinates**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] * kernel[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(prediction: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
    data range 1, averaged over the valid region and the channels."""
    x, y = prediction.float(), target.float()
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma, channels, x.device)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1)


def flow_warping_rmse(frames: torch.Tensor, flow: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      interval: int = 1) -> torch.Tensor:
    """Flow-warping RMSE (Lai et al. 2018; the paper's RAFT + softmax-splatting variant).

    For each pair (frame i, frame i + ``interval``) the flow from i to i + interval is estimated,
    frame i is forward-warped by softmax splatting (importance from brightness constancy) and
    compared with frame i + interval on the pixels the splat reaches. Lower is more consistent.

    Args:
        frames: [F, 3, H, W] in [0, 1], in orbit order.
        flow: ``flow(sources [P, 3, H, W], targets [P, 3, H, W]) -> [P, 2, H, W]`` in pixels
            (e.g. ``models.metrics.raft.RAFT``).
    Returns:
        [F - interval] RMSE per pair, in units of the [0, 1] intensity range.
    """
    if not 0 < interval < len(frames):
        raise ValueError(f"interval must be in [1, {len(frames) - 1}] for {len(frames)} frames, got {interval}")
    sources, targets = frames[:-interval].float(), frames[interval:].float()
    pair_flow = flow(sources, targets).float()
    warped, weight = softmax_splat(sources, pair_flow, splat_metric(sources, targets, pair_flow))
    covered = (weight > 0).float()
    squared = ((warped - targets) ** 2 * covered).sum(dim=(1, 2, 3))
    count = covered.sum(dim=(1, 2, 3)) * frames.shape[1]
    return (squared / count.clamp(min=1)).sqrt()
