"""Writing views for people: a PNG grid, an orbit GIF and an orbit MP4."""

from __future__ import annotations

import io
import os
import tempfile

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


def orbit_mp4(views: torch.Tensor | np.ndarray, fps: int = 10) -> bytes:
    """The views as an H.264 MP4 (one turn of the orbit; ``diffusers.utils.export_to_video`` with
    imageio's bundled ffmpeg). Sides are padded to even sizes by repeating the edge, which H.264's
    4:2:0 needs; the views of every model here are even already."""
    from diffusers.utils import export_to_video

    frames = to_uint8(views)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with tempfile.TemporaryDirectory(prefix="videomv-mp4-") as directory:
        path = os.path.join(directory, "orbit.mp4")
        export_to_video([Image.fromarray(frame) for frame in frames], path, fps=fps, macro_block_size=2)
        with open(path, "rb") as handle:
            return handle.read()


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()
