"""Writing views for people: a PNG grid and an orbit GIF."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_uint8(views: torch.Tensor | np.ndarray) -> np.ndarray:
    """Views [F, 3, H, W] in [0, 1] (tensor) or uint8 [F, H, W, 3] -> uint8 [F, H, W, 3]."""
    if isinstance(views, torch.Tensor):
        views = (views.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return np.asarray(views, dtype=np.uint8)


def grid_image(views: torch.Tensor | np.ndarray, columns: int = 6) -> Image.Image:
    """All views in one image, row-major in view order (6 columns: one row per 90 degrees)."""
    frames = to_uint8(views)
    count, height, width, _ = frames.shape
    rows = -(-count // columns)
    canvas = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for index, frame in enumerate(frames):
        row, column = divmod(index, columns)
        canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = frame
    return Image.fromarray(canvas)


def orbit_gif(views: torch.Tensor | np.ndarray, seconds_per_view: float = 0.1) -> bytes:
    """The views as a looping GIF (the orbit as a turntable)."""
    frames = [Image.fromarray(frame) for frame in to_uint8(views)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:],
                   duration=int(seconds_per_view * 1000), loop=0)
    return buffer.getvalue()


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()
