"""The PyTorch rasteriser's compositing as it was before issue 17, kept as ``benchmarks/gaussians.py``'s
baseline: the same projection and tile binning (``models.gaussians.rendering``), then every tile's
whole list composited at once, tiles chunked in the order they come (each chunk padded to its
longest list), no early termination."""

from __future__ import annotations

import math

import torch

import camera
from models.gaussians._torch_rasterizer import _CHUNK_ELEMENTS, ALPHA_MAX, ALPHA_MIN, TILE, _project, bin_tiles, tile_buffers
from models.gaussians.gaussians import Gaussians


def render_baseline(gaussians: Gaussians, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                    background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``render_gaussians(..., backend="torch")`` before issue 17: colors [C, H, W, 3], alphas [C, H, W, 1]."""
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype, device=c2w.device)
    viewmats = torch.linalg.inv(c2w @ flip)
    bg = torch.as_tensor(background, dtype=c2w.dtype, device=c2w.device)
    outputs = [_render_view(gaussians, viewmat, K, width, height, bg) for viewmat in viewmats]
    return torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])


def _render_view(gaussians: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                 background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    device, dtype = gaussians.means.device, gaussians.means.dtype
    means2d, depths, conics, radii = _project(gaussians, viewmat, K, width, height)
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    pair_gaussian, per_tile, starts = bin_tiles(means2d, depths, radii, width, height)
    colors, alphas, pixel_offsets = tile_buffers(tiles_x * tiles_y, background)

    def flush(tile_ids: list[int], depth: int) -> None:
        tiles = torch.tensor(tile_ids, device=device)
        slots = torch.arange(depth, device=device)
        index = starts[tiles, None] + slots[None, :]
        valid = slots[None, :] < per_tile[tiles, None]
        gaussian = pair_gaussian[index.clamp(max=len(pair_gaussian) - 1)]
        origin = torch.stack([(tiles % tiles_x) * TILE, (tiles // tiles_x) * TILE], dim=-1).to(dtype)
        pixels = origin[:, None, :] + pixel_offsets[None]
        delta = pixels[:, :, None, :] - means2d[gaussian][:, None, :, :]
        conic = conics[gaussian][:, None]
        power = -0.5 * (conic[..., 0] * delta[..., 0] ** 2 + conic[..., 2] * delta[..., 1] ** 2) \
            - conic[..., 1] * delta[..., 0] * delta[..., 1]
        alpha = (gaussians.opacities[gaussian][:, None] * torch.exp(power)).clamp(max=ALPHA_MAX)
        keep = valid[:, None, :] & (power <= 0) & (alpha >= ALPHA_MIN)
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        transmittance = torch.cumprod(1.0 - alpha, dim=-1)
        before = torch.cat([torch.ones_like(transmittance[..., :1]), transmittance[..., :-1]], dim=-1)
        colour = torch.einsum("tpk,tkc->tpc", alpha * before, gaussians.colors[gaussian])
        remaining = transmittance[..., -1]
        colors[tiles] = colour + remaining[..., None] * background
        alphas[tiles] = 1.0 - remaining

    chunk: list[int] = []
    longest = 0
    for tile in torch.nonzero(per_tile).flatten().tolist():
        count = int(per_tile[tile])
        if chunk and (len(chunk) + 1) * TILE * TILE * max(longest, count) > _CHUNK_ELEMENTS:
            flush(chunk, longest)
            chunk, longest = [], 0
        chunk.append(tile)
        longest = max(longest, count)
    if chunk:
        flush(chunk, longest)

    def to_image(tiled: torch.Tensor) -> torch.Tensor:
        image = tiled.reshape(tiles_y, tiles_x, TILE, TILE, tiled.shape[-1]).permute(0, 2, 1, 3, 4)
        return image.reshape(tiles_y * TILE, tiles_x * TILE, tiled.shape[-1])[:height, :width]

    return to_image(colors), to_image(alphas[..., None])
