"""Input a careless client or an attacker sends, read without a server: image files (formats,
EXIF, 16-bit, bombs), a body that never finishes arriving, and broken model directories whose
errors must name the file and the problem (issue 30)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from fastapi import HTTPException
from PIL import Image
from starlette.requests import Request

from models.pipeline_videomv.loading import ModelDirectoryError
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.reconstructor.model import LGM
from models.toy.tiny import make_tiny
from pipeline.serve.api import decode_image
from pipeline.serve.ingress import read_body


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def refused(data: bytes) -> HTTPException:
    with pytest.raises(HTTPException) as caught:
        decode_image(data, 8)
    assert " at 0x" not in caught.value.detail  # no memory address (Pillow's repr of the file object)
    return caught.value


def test_a_mid_grey_16_bit_png_reaches_the_model_as_mid_grey():
    """A mid-grey object on black, 16 bits per pixel: the object reaches the model as mid-grey."""
    grey16 = np.zeros((32, 32), np.uint16)
    grey16[8:24, 8:24] = 32768
    pixels = decode_image(encoded(Image.fromarray(grey16), "PNG"), 16)
    centre = pixels[:, 6:10, 6:10]
    assert abs(float(centre.mean())) < 0.02  # [-1, 1]: mid-grey is 0 (Pillow's convert would give white, 1)


def test_exif_orientation_is_applied():
    """A JPEG stored sideways with orientation 6 (rotate 90 deg clockwise to display): an object red
    on its left half and blue on its right as stored is red on top and blue below as displayed."""
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[8:24, 8:24] = (255, 0, 0)
    stored[8:24, 24:40] = (0, 0, 255)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    pixels = decode_image(encoded(image, "JPEG", exif=exif, quality=95), 32)
    above, below = pixels[:, 10, 16], pixels[:, 21, 16]  # above and below the centred object's middle
    assert above[0] > 0.5 and above[2] < -0.3 and below[2] > 0.5 and below[0] < -0.3


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "BMP", "EPS"])
def test_formats_other_than_png_jpeg_webp_are_refused(fmt):
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    try:
        data = encoded(image, fmt)
    except (OSError, KeyError):  # EPS needs Ghostscript to write: its header is enough
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
    error = refused(data)
    assert error.status_code == 400 and "PNG, JPEG or WebP" in error.detail


def test_a_decompression_bomb_is_413_before_it_is_decoded():
    error = refused(png_header_only(20000, 20000))
    assert error.status_code == 413 and "decompression bomb" in error.detail
    error = refused(png_header_only(5000, 100))
    assert error.status_code == 413 and "limit is 4096 per side" in error.detail


def test_webp_and_truncated_files():
    image = Image.new("RGB", (16, 16), (255, 255, 255))
    image.paste((200, 100, 50), (4, 4, 12, 12))  # an object on a plain background
    assert decode_image(encoded(image, "WEBP", lossless=True), 8).shape == (3, 8, 8)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    png = encoded(noise, "PNG")
    error = refused(png[:len(png) // 2])  # cut inside its pixel data
    assert error.status_code == 400


def test_a_body_that_never_finishes_arriving_gets_408():
    async def trickle() -> dict:
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def first_then_trickle(state={"sent": False}) -> dict:  # noqa: B006 (one request's state)
        if not state["sent"]:
            state["sent"] = True
            return {"type": "http.request", "body": b"0123456789", "more_body": True}
        return await trickle()

    request = Request({"type": "http", "method": "POST", "headers": [(b"content-length", b"1000")]}, first_then_trickle)
    with pytest.raises(HTTPException) as caught:
        asyncio.run(read_body(request, 10_000, timeout_s=0.5))
    assert caught.value.status_code == 408


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return make_tiny("t2v", str(tmp_path_factory.mktemp("dirs") / "t2v"))


def broken_copy(tiny_dir: str, tmp_path, name: str) -> str:
    target = str(tmp_path / name)
    shutil.copytree(tiny_dir, target)
    return target


@pytest.mark.parametrize("damage, message", [
    (lambda d: open(f"{d}/model_index.json", "w").write("{not json"), "model_index.json is not valid JSON"),
    (lambda d: open(f"{d}/scheduler/scheduler_config.json", "w").write("[1, 2"), "scheduler_config.json is not valid JSON"),
    (lambda d: json.dump({"_class_name": "NoSuchPipeline"}, open(f"{d}/model_index.json", "w")), "names 'NoSuchPipeline'"),
    (lambda d: json.dump({**json.load(open(f"{d}/scheduler/scheduler_config.json")), "_class_name": "MadeUpScheduler"},
                         open(f"{d}/scheduler/scheduler_config.json", "w")), "'MadeUpScheduler', which is not a diffusers"),
    (lambda d: open(f"{d}/unet/diffusion_pytorch_model.safetensors", "r+b").truncate(100), "unet/ could not be loaded"),
    (lambda d: open(f"{d}/text_encoder/model.safetensors", "r+b").truncate(100), "text_encoder/ could not be loaded"),
])
def test_broken_model_directories_name_the_file_and_the_problem(tiny_dir, tmp_path, damage, message):
    directory = broken_copy(tiny_dir, tmp_path, "broken")
    damage(directory)
    with pytest.raises(ModelDirectoryError, match=message) as caught:
        VideoMVPipeline.from_pretrained(directory)
    assert directory in str(caught.value)


def test_broken_reconstructor_directories_name_the_file(tmp_path):
    LGM("tiny").save_pretrained(str(tmp_path / "lgm"))
    (tmp_path / "lgm" / "model.safetensors").open("r+b").truncate(64)
    with pytest.raises(ValueError, match=r"lgm/model.safetensors is not a readable safetensors file"):
        LGM.from_pretrained(str(tmp_path / "lgm"))
    LGM("tiny").save_pretrained(str(tmp_path / "lgm2"))
    (tmp_path / "lgm2" / "lgm_options.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"lgm2/lgm_options.json is not an LGM options file"):
        LGM.from_pretrained(str(tmp_path / "lgm2"))


def _edit_weights(path: str, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_a_config_that_does_not_fit_its_weights_is_refused_before_anything_is_allocated(tiny_dir, tmp_path):
    """A 65,536-channel UNet config beside small weights asked for 150 GB before reading a weight."""
    import subprocess
    import sys

    directory = broken_copy(tiny_dir, tmp_path, "huge")
    config = json.load(open(f"{directory}/unet/config.json"))
    json.dump({**config, "block_out_channels": [32, 65536]}, open(f"{directory}/unet/config.json", "w"))
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
            "from models import VideoMVPipeline\n"
            f"VideoMVPipeline.from_pretrained({directory!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "unet/config.json describes 876,292,129,604 parameters but its weights hold" in done.stderr, done.stderr[-2000:]
    assert "allocate" not in done.stderr


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.__setitem__("conv_in.weight", torch.full_like(t["conv_in.weight"], float("nan"))),
     r"unet/: parameter conv_in.weight holds \d+ NaN or infinite"),
    (lambda t: t.__setitem__("conv_out.bias", torch.full_like(t["conv_out.bias"], float("inf"))),
     r"unet/: parameter conv_out.bias holds 4 NaN or infinite"),
])
def test_weights_that_are_not_finite_numbers_are_named(tiny_dir, tmp_path, damage, message):
    directory = broken_copy(tiny_dir, tmp_path, "bad-weights")
    _edit_weights(f"{directory}/unet/diffusion_pytorch_model.safetensors", damage)
    with pytest.raises(ModelDirectoryError, match=message):
        VideoMVPipeline.from_pretrained(directory)
