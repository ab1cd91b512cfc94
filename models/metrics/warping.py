"""Image warping by optical flow: backward sampling and forward softmax splatting.

Conventions: images [N, C, H, W]; flow [N, 2, H, W] in pixels (channel 0 = x right, 1 = y down),
giving for each pixel of the source image its position in the target image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SPLAT_METRIC_SCALE = -20.0  # softmax splatting's importance: -20 x brightness-constancy error (Niklaus & Liu 2020)


def coordinate_grid(batch: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """[N, 2, H, W] pixel coordinates, channel 0 = x, channel 1 = y."""
    y, x = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([x, y]).float()[None].expand(batch, -1, -1, -1)


def bilinear_sample(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` [N, C, H, W] at pixel coordinates ``coords`` [N, h, w, 2] (x, y); zeros outside."""
    height, width = image.shape[-2:]
    grid = torch.stack([2 * coords[..., 0] / (width - 1) - 1, 2 * coords[..., 1] / (height - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, align_corners=True)


def backward_warp(target: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """The target image pulled back to the source frame: ``out[p] = target[p + flow[p]]``."""
    coords = coordinate_grid(flow.shape[0], flow.shape[2], flow.shape[3], flow.device) + flow
    return bilinear_sample(target, coords.permute(0, 2, 3, 1))


def softmax_splat(source: torch.Tensor, flow: torch.Tensor, metric: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-warp ``source`` along ``flow`` by softmax splatting.

    Each source pixel is splatted bilinearly to its 4 neighbours at ``p + flow[p]`` with weight
    ``exp(metric[p])``; where several land on one pixel the larger metric wins softly (occlusion).
    Args:
        source: [N, C, H, W]; flow: [N, 2, H, W]; metric: [N, 1, H, W] or None (plain average).
    Returns:
        (warped [N, C, H, W], accumulated weight [N, 1, H, W]); pixels nothing lands on are 0
        with weight 0.
    """
    n, c, h, w = source.shape
    position = coordinate_grid(n, h, w, source.device) + flow
    finite = torch.isfinite(position).all(dim=1)  # a diverged flow lands nowhere
    position = torch.where(finite[:, None], position, torch.full_like(position, -2.0))
    importance = torch.ones_like(flow[:, :1]) if metric is None else metric.clamp(-20, 20).exp()
    x0, y0 = position[:, 0].floor(), position[:, 1].floor()
    values = torch.cat([source * importance, importance], dim=1).flatten(2)  # [N, C+1, HW]
    accumulated = torch.zeros_like(values)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = x0 + dx, y0 + dy
            weight = (1 - (position[:, 0] - x).abs()) * (1 - (position[:, 1] - y).abs())
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h) & (weight > 0)
            index = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).long().flatten(1)  # [N, HW]
            contribution = values * (weight * inside).flatten(1)[:, None]
            accumulated.scatter_add_(2, index[:, None].expand(-1, c + 1, -1), contribution)
    accumulated = accumulated.view(n, c + 1, h, w)
    weight = accumulated[:, c:]
    warped = accumulated[:, :c] / weight.clamp(min=1e-8)
    return warped * (weight > 0), weight


def splat_metric(source: torch.Tensor, target: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Softmax-splatting importance [N, 1, H, W] from brightness constancy: pixels whose flow
    explains the target well win where splats collide."""
    error = (source - backward_warp(target, flow)).abs().mean(dim=1, keepdim=True)
    return SPLAT_METRIC_SCALE * error
