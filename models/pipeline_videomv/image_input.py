"""The image model's input: what a user's image becomes before G sees it.

Light (PIL and torch only): the Serve ingress decodes uploads with it without loading model code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch


def condition_image(image: PIL.Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> the image model's condition [3, size, size] in [-1, 1]: transparency composited
    on white (the image model's background), centre-cropped to a square, resized (bicubic)."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), PIL.Image.BICUBIC)
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return array.permute(2, 0, 1).float() / 127.5 - 1.0


def condition_images(image: Any, size: int) -> torch.Tensor:
    """PIL image(s), uint8/float arrays [H, W, 3] or tensors [B, 3, H, W] in [0, 1] -> [B, 3, S, S] in [-1, 1]."""
    if isinstance(image, torch.Tensor):
        images = image[None] if image.ndim == 3 else image
        if images.shape[-1] != size or images.shape[-2] != size:
            images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic",
                                                     align_corners=False).clamp(0, 1)
        return images.float() * 2 - 1
    items = image if isinstance(image, (list, tuple)) else [image]
    tensors = []
    for item in items:
        if isinstance(item, np.ndarray):
            array = item if item.dtype == np.uint8 else (np.clip(item, 0, 1) * 255).round().astype(np.uint8)
            item = PIL.Image.fromarray(array)
        if not isinstance(item, PIL.Image.Image):
            raise TypeError(f"image must be PIL images, arrays [H, W, 3] or a tensor, got {type(item).__name__}")
        tensors.append(condition_image(item, size))
    return torch.stack(tensors)
