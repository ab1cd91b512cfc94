"""The image model's input: what a user's image becomes before G sees it.

Light (PIL, NumPy, torch and the ``camera`` constants): the Serve ingress decodes and preprocesses
uploads with it without loading model code.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

import camera
from models.variants import VARIANTS


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


# The share of the frame that the longest side of an object takes in the training renders: objects
# are normalised to a longest side of 1 and seen from DEFAULT_DISTANCE at DEFAULT_FOV_DEG, so a unit
# length at the origin spans 1 / (2 d tan(fov / 2)) = 0.694 of the frame. Measured on the render
# stage's output (the bundled assets, 24 views each at 128 px, the object's 2D box): 0.706 on
# average, from 0.54 (the teapot, seen end on) to 0.95 (the box's diagonal); the Duck 0.73
# (tests/test_image_input.py checks it). The authors scale theirs to 200 of 256 px (0.78).
IMAGE_MODEL_BACKGROUND = VARIANTS["i2v"].background  # what the image model saw its renders on
OBJECT_FRACTION = 1.0 / (2 * camera.DEFAULT_DISTANCE * math.tan(math.radians(camera.DEFAULT_FOV_DEG) / 2))
MAX_OBJECT_ASPECT = 20  # longest side over shortest of the object's box: a 20:1 object is ~8 px wide at 256 px
BORDER_TOLERANCE = 0.1  # a background pixel is within this of the border's colour (RGB in [0, 1], max channel)
UNIFORM_BORDER = 0.97  # the share of border pixels that must be: less is a cluttered background


class ImageInputError(ValueError):
    """The image cannot be made into the image model's input; the message says how to fix it."""


def object_mask(image: PIL.Image.Image, remove_background: Any | None = None) -> np.ndarray:
    """The object's alpha [H, W] in [0, 1] of an 8-bit image: its alpha channel when it has one
    (and uses it); else ``remove_background(image) -> PIL "L" mask`` (e.g. rembg with a local
    model, ``background_remover``); else, where the image's border is near-uniform (a product
    shot on a plain backdrop), the pixels that differ from the border's colour. A cluttered image
    without a remover gets ``ImageInputError`` saying how to fix it."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3] / 255.0
        if alpha.min() < 0.99:
            return alpha
    if remove_background is not None:
        return np.asarray(remove_background(image.convert("RGB")).convert("L"), dtype=np.float32) / 255.0
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    ring = max(1, min(rgb.shape[:2]) // 50)
    border = np.concatenate([rgb[:ring].reshape(-1, 3), rgb[-ring:].reshape(-1, 3),
                             rgb[:, :ring].reshape(-1, 3), rgb[:, -ring:].reshape(-1, 3)])
    colour = np.median(border, axis=0)
    uniform = float((np.abs(border - colour).max(axis=1) <= BORDER_TOLERANCE).mean())
    if uniform < UNIFORM_BORDER:
        raise ImageInputError(
            f"the image has no alpha channel and its background is not plain (only {uniform:.0%} of its border "
            "is one colour): give an RGBA image whose alpha is the object's mask, or configure a "
            "background-removal model (rembg's ONNX file: --rembg-model)")
    return (np.abs(rgb - colour).max(axis=-1) > BORDER_TOLERANCE).astype(np.float32)


def check_background_model(model_path: str) -> None:
    """A ``ValueError`` naming the problem unless ``model_path`` is a file that looks like an ONNX
    model (a serialized ModelProto starts with its ir_version field, byte 0x08) and rembg and
    onnxruntime are installed: checked where the app is built, so a bad file stops ``serve run``
    at once with its cause instead of failing the replica minutes later."""
    if not os.path.isfile(model_path):
        raise ValueError(f"rembg_model: no such file {model_path!r} (a local rembg ONNX model)")
    with open(model_path, "rb") as handle:
        head = handle.read(2)
    if head[:1] != b"\x08":
        raise ValueError(f"rembg_model: {model_path!r} is not an ONNX model (give u2net.onnx, isnet-general-use.onnx "
                         "or a birefnet .onnx as rembg ships them)")
    import importlib.util

    missing = [name for name in ("rembg", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"rembg_model needs {' and '.join(missing)}: pip install rembg onnxruntime")


def background_remover(model_path: str) -> Any:
    """``remove_background`` for ``object_mask`` from a local rembg ONNX model file (never a
    download): u2net, isnet or birefnet files as rembg ships them."""
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"background-removal model not found: {model_path}")
    try:
        import rembg
    except ImportError:
        raise ImportError("removing backgrounds needs rembg and onnxruntime: pip install rembg onnxruntime") from None
    session = rembg.new_session("u2net_custom", model_path=model_path)
    return lambda image: rembg.remove(image, session=session, only_mask=True)


def preprocess_image(image: PIL.Image.Image, background: tuple[float, float, float] = IMAGE_MODEL_BACKGROUND,
                     fraction: float = OBJECT_FRACTION, remove_background: Any | None = None) -> PIL.Image.Image:
    """A user's image -> what the image model saw in training: EXIF orientation applied, 8 bits,
    the object masked (``object_mask``), its box centred and scaled to ``fraction`` of a square
    frame, composited on ``background`` (RGB in [0, 1], the variant's). Returns a square RGB image
    at the input's scale (``condition_image`` resizes it)."""
    image = to_8bit(PIL.ImageOps.exif_transpose(image) or image)
    mask = object_mask(image, remove_background)
    rows, columns = np.nonzero(mask > 0.5)
    if len(rows) == 0:
        raise ImageInputError("no object found in the image (its mask is empty): give an RGBA image whose alpha "
                              "is the object's mask")
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    height, width = bottom - top, right - left
    if max(height, width) > MAX_OBJECT_ASPECT * min(height, width):
        # Scaled into the square frame such an object is a line a few pixels wide: a blank input.
        raise ImageInputError(f"the object is {width}x{height} pixels, more elongated than {MAX_OBJECT_ASPECT}:1: "
                              "in the model's square input it would be a line; give an image of the whole object")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)[top:bottom, left:right] / 255.0
    alpha = mask[top:bottom, left:right, None]
    side = int(np.ceil(max(bottom - top, right - left) / fraction))
    canvas = np.empty((side, side, 3), dtype=np.float32)
    canvas[:] = background
    layer = np.zeros((side, side, 4), dtype=np.float32)
    y0, x0 = (side - (bottom - top)) // 2, (side - (right - left)) // 2
    layer[y0:y0 + bottom - top, x0:x0 + right - left] = np.concatenate([rgb, alpha], axis=-1)
    composed = layer[..., :3] * layer[..., 3:] + canvas * (1 - layer[..., 3:])
    return PIL.Image.fromarray(np.clip(np.round(composed * 255), 0, 255).astype(np.uint8), "RGB")


def condition_image(image: PIL.Image.Image, size: int, background: tuple[float, float, float] = IMAGE_MODEL_BACKGROUND,
                    remove_background: Any | None = None) -> torch.Tensor:
    """A PIL image -> the image model's condition [3, size, size] in [-1, 1]: ``preprocess_image``
    (EXIF orientation, 8 bits, the object masked, centred and scaled as in the renders, on
    ``background``), resized (bicubic). ``ImageInputError`` when no object can be found."""
    image = preprocess_image(image, background, remove_background=remove_background)
    image = image.resize((size, size), PIL.Image.BICUBIC)
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return array.permute(2, 0, 1).float() / 127.5 - 1.0


def condition_images(image: Any, size: int,
                     background: tuple[float, float, float] = IMAGE_MODEL_BACKGROUND) -> torch.Tensor:
    """PIL image(s), uint8/float arrays [H, W, 3 or 4] or tensors [B, 3, H, W] in [0, 1] -> [B, 3, S, S]
    in [-1, 1]. Images and arrays are preprocessed (``preprocess_image``); tensors are taken as
    they are (already what the model saw: e.g. a rendered view)."""
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
        tensors.append(condition_image(item, size, background))
    return torch.stack(tensors)
