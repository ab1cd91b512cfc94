"""The image model's input (models/pipeline_videomv/image_input.py): a user's image masked,
centred and scaled as the training renders are, on the variant's background (issue 32)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.pipeline_videomv.image_input import (OBJECT_FRACTION, ImageInputError, condition_image, object_mask,
                                                 preprocess_image)
from pipeline.data.rows import row_to_tensors


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(mask)
    return rows.min(), rows.max() + 1, columns.min(), columns.max() + 1


def test_an_off_centre_small_object_ends_centred_at_the_renders_size():
    photo = np.full((300, 400, 3), 40, np.uint8)  # a plain dark backdrop
    photo[20:60, 300:330] = (250, 200, 20)  # a small yellow object near the top right, 40 x 30 px
    result = np.asarray(preprocess_image(Image.fromarray(photo), background=(1.0, 1.0, 1.0)))
    assert result.shape[0] == result.shape[1]
    top, bottom, left, right = box_of((np.abs(result.astype(int) - (250, 200, 20)) < 10).all(-1))
    side = result.shape[0]
    assert abs((bottom - top) / side - OBJECT_FRACTION) < 0.01  # its longest side
    assert abs((top + bottom) / 2 - side / 2) <= 1 and abs((left + right) / 2 - side / 2) <= 1
    assert (result[0, 0] == 255).all() and (result[-1, -1] == 255).all()  # the variant's background, not the backdrop


def test_an_rgba_image_keeps_its_mask():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (0, 0, 255)  # blue everywhere, but only the disc is the object
    ys, xs = np.mgrid[:64, :64]
    disc = (ys - 20) ** 2 + (xs - 40) ** 2 < 12**2
    rgba[disc, 3] = 255
    np.testing.assert_allclose(object_mask(Image.fromarray(rgba, "RGBA")), disc.astype(np.float32))
    result = np.asarray(preprocess_image(Image.fromarray(rgba, "RGBA"), background=(0.5, 0.5, 0.5)))
    blue = (result[..., 2] > 200) & (result[..., 0] < 50)
    assert abs(blue.sum() / disc.sum() * (OBJECT_FRACTION * result.shape[0] / 24) ** -2 - 1) < 0.1  # the disc, scaled
    assert (np.abs(result[~blue].astype(int) - 128) < 40).mean() > 0.97  # everything else: the grey background


def test_a_cluttered_image_without_a_background_model_is_refused_with_how_to_fix_it():
    clutter = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ImageInputError, match="give an RGBA image .* or configure a background-removal model"):
        preprocess_image(Image.fromarray(clutter))
    with pytest.raises(ImageInputError, match="no object found"):
        preprocess_image(Image.new("RGB", (32, 32), (10, 200, 30)))
    # A background-removal model (here a stand-in callable with rembg's interface) lifts the refusal.
    mask = Image.fromarray(np.pad(np.full((20, 20), 255, np.uint8), 22))
    assert preprocess_image(Image.fromarray(clutter), remove_background=lambda image: mask).size[0] > 20


def test_the_serve_decoder_answers_422_with_the_fix():
    from fastapi import HTTPException

    from pipeline.serve.api import decode_image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    with pytest.raises(HTTPException) as caught:
        decode_image(buffer.getvalue(), 16)
    assert caught.value.status_code == 422 and "RGBA" in caught.value.detail


@pytest.mark.parametrize("size", [(1, 4000), (4000, 1), (3, 200)])
def test_an_extremely_elongated_object_is_refused_not_sampled_from_a_blank_input(size):
    """Issue 40 F9: a 1x4000 image got 200 with a blank input (scaled into the square frame, the
    object was a line under a pixel wide). Now 422 naming the object's shape."""
    from fastapi import HTTPException

    from pipeline.serve.api import decode_image

    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (200, 30, 30), 255
    if size[1] > size[0]:  # a transparent end: the alpha is a real mask, not an opaque backdrop
        rgba[0, :, 3] = 0
    else:
        rgba[:, 0, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    with pytest.raises(HTTPException) as caught:
        decode_image(buffer.getvalue(), 32)
    assert caught.value.status_code == 422 and "pixels, more elongated than 20:1" in caught.value.detail
    pencil = np.zeros((200, 20, 4), np.uint8)  # 10:1, a pencil: taken
    pencil[1:, :, 3] = 255
    assert condition_image(Image.fromarray(pencil, "RGBA"), 32).shape == (3, 32, 32)


def test_the_object_fraction_is_what_the_render_stage_renders(duck_row):
    """``OBJECT_FRACTION`` against the render stage's own output: the Duck's 24 views (its box is
    0.70 x 0.93 x 1 in the unit cube, so its longest side in a view varies with the azimuth)."""
    alphas = row_to_tensors(duck_row, background=(1.0, 1.0, 1.0))["alphas"].numpy()[:, 0] * 255
    fractions = []
    for alpha in alphas:
        top, bottom, left, right = box_of(alpha > 127)
        fractions.append(max(bottom - top, right - left) / alpha.shape[-1])
    assert abs(np.mean(fractions) - OBJECT_FRACTION) < 0.05, fractions


def test_condition_image_is_the_preprocessed_image_resized():
    photo = np.full((100, 100, 3), 255, np.uint8)
    photo[10:30, 60:90] = (200, 30, 30)
    tensor = condition_image(Image.fromarray(photo), 32)
    assert tensor.shape == (3, 32, 32) and float(tensor.min()) >= -1 and float(tensor.max()) <= 1
    red = (tensor[0] > 0.3) & (tensor[1] < -0.5)
    top, bottom, left, right = box_of(red.numpy())
    assert abs((right - left) / 32 - OBJECT_FRACTION) < 0.07 and abs((top + bottom) / 2 - 16) <= 1.5
