"""Orbit shard rows -> the reconstructor's tensors (views, masks, cameras)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from pipeline.data import schema


def composite(rgba: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    """RGBA [V, 4, H, W] in [0, 1] -> RGB [V, 3, H, W] over a flat ``background`` colour (0-1)."""
    alphas = rgba[:, 3:4]
    colour = torch.tensor(background, dtype=rgba.dtype).view(1, 3, 1, 1)
    return rgba[:, :3] * alphas + colour * (1.0 - alphas)


def row_to_tensors(row: Mapping[str, Any], background: tuple[float, float, float]) -> dict[str, torch.Tensor]:
    """One ok shard row -> {"views" [V, 3, H, W] RGB in [0, 1] composited on ``background`` (0-1),
    "alphas" [V, 1, H, W], "c2w" [V, 4, 4] float32 (OpenGL, ``camera`` module)}."""
    rgba = torch.from_numpy(schema.decode_views(row)).permute(0, 3, 1, 2).float() / 255.0
    c2w, _ = schema.decode_cameras(row)
    return {"views": composite(rgba, background), "alphas": rgba[:, 3:4], "c2w": torch.from_numpy(np.ascontiguousarray(c2w)).float()}


def shard_views(data: str, resolution: int, background: tuple[float, float, float]) -> torch.Tensor:
    """Every ok view of the shards under ``data``: [N, 3, resolution, resolution] RGB in [-1, 1] on
    ``background`` (0-1), area-resized. For small data (the local run's autoencoder); training
    reads through Ray Data."""
    from pipeline.data.shards import read_rows

    rows = read_rows(data, columns=["uid", "status", "views", "c2w", "intrinsics"])
    if not rows:
        raise ValueError(f"no rendered orbits under {data}")
    views = torch.cat([row_to_tensors(row, background)["views"] for row in rows])
    if views.shape[-1] != resolution:
        views = torch.nn.functional.interpolate(views, size=(resolution, resolution), mode="area")
    return views * 2.0 - 1.0
