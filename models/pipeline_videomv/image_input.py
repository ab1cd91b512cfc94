"""The image model's input: what a user's image becomes before G sees it.

Light (PIL and torch only): the Serve ingress decodes uploads with it without loading model code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch


def to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` with 8 bits per channel, values scaled (not clipped): 16-bit grey (PNG's "I;16",
    read by Pillow as "I;16" or "I") is divided by 257, float ("F") taken as [0, 1]. Pillow's own
    ``convert`` would clip both to 255 (a mid-grey 16-bit PNG would become white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64) / 257.0
        return PIL.Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64) * 255.0
        return PIL.Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), "L")
    return image


def condition_image(image: PIL.Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> the image model's condition [3, size, size] in [-1, 1]: EXIF orientation
    applied, 16-bit and float images scaled to 8 bits (``to_8bit``), transparency composited on
    white (the image model's background), centre-cropped to a square, resized (bicubic)."""
    image = to_8bit(PIL.ImageOps.exif_transpose(image) or image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
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
