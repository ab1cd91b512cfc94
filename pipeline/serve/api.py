"""The HTTP API of the Serve app: the request schema, its limits, the job a request becomes, and the
encoding of an answer (JSON with base64 files, or a zip). Light: the ingress imports it, and so
does the model deployment, without either importing the other.
"""

# No "from __future__ import annotations": FastAPI and pydantic resolve the annotations at runtime.

import base64
import io
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import torch
from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.pipeline_videomv.image_input import condition_image
from pipeline.serve.client import RESULT_FILES

MAX_PROMPT_CHARS = 500
MAX_UPLOAD_BYTES = 7 * 1024 * 1024  # a decoded image; its base64 form still fits the default body limit
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
OUTPUTS = ("views", "ply", "grid", "gif", "mp4", "gaussians_mp4")


class GenerationCancelled(Exception):
    """Every request of a batch went away (client disconnect or timeout): stop sampling."""


class GenerateRequest(BaseModel):
    """One generation. Exactly one of ``prompt`` (text model) or ``image`` (image model)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="text prompt (text-to-multi-view)")
    image: str | None = Field(None, description="base64 image (image-to-multi-view); or a multipart file")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    steps: int = Field(50, ge=1, le=200, description="DDIM steps")
    guidance_scale: float | None = Field(None, ge=1.0, le=30.0, description="default 9.0 text / 6.0 image")
    elevation: float | None = Field(None, ge=-30.0, le=60.0, description=(
        "degrees; default 15 text / 5 image, moved inside the model's training cameras (GET /v1/health); "
        "outside them: 422"))
    three_d_aware: bool = Field(True, description=(
        "reconstruct x0 at steps 20, 30, 40 of 50 (scaled), except where the reconstructor's renders were "
        "measured worse than x0 (its three_d_aware.json)"))
    mode: Literal["two", "one"] = Field("two", description="two: authors' form; one: reconstruct the guided x0")
    outputs: list[Literal["views", "ply", "grid", "gif", "mp4", "gaussians_mp4"]] = Field(
        default_factory=lambda: ["views", "ply"], description=(
            "views (24 PNGs), ply (the Gaussians), grid (PNG), gif and mp4 (the orbit), gaussians_mp4 (the "
            "Gaussians rendered at the 24 cameras); ply and gaussians_mp4 need a reconstructor"))
    format: Literal["json", "zip"] = "json"
    request_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description=(
        "a name the client chose for this request: GET /v1/progress/{request_id} reports its steps done"))

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt is empty")
        return value.strip() if value is not None else None


@dataclass
class Job:
    """A validated request as the model deployment receives it."""

    prompt: str | None
    image: torch.Tensor | None  # [3, H, W] in [-1, 1]
    seed: int
    steps: int
    guidance_scale: float | None
    elevation: float | None
    three_d_aware: bool
    mode: str
    outputs: tuple[str, ...]
    request_id: str | None = None

    def batch_key(self) -> tuple:
        return (self.steps, self.guidance_scale, self.elevation, self.three_d_aware, self.mode,
                self.prompt is None, None if self.image is None else tuple(self.image.shape))


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Image bytes -> [3, size, size] in [-1, 1] (centre crop); HTTP 400/413 on bad input."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"image is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    try:
        image = Image.open(io.BytesIO(data))
        if max(image.size) > MAX_IMAGE_SIDE:
            raise HTTPException(413, f"image is {image.size[0]}x{image.size[1]}; the limit is {MAX_IMAGE_SIDE} per side")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise HTTPException(400, f"image is not a readable image file: {error}") from None
    return condition_image(image, size)


def respond(answer: dict[str, Any], form: str) -> Response:
    if form == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for index, view in enumerate(answer.get("views", [])):
                archive.writestr(f"views/view_{index:03d}.png", view)
            for key, name in RESULT_FILES.items():
                if key in answer:
                    archive.writestr(name, answer[key])
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"content-disposition": 'attachment; filename="videomv.zip"'})
    body: dict[str, Any] = {k: answer[k] for k in ("seed", "seconds", "reconstructions", "batch_size")}
    if "views" in answer:
        body["views"] = [base64.b64encode(view).decode() for view in answer["views"]]
    for key in RESULT_FILES:
        if key in answer:
            body[key] = base64.b64encode(answer[key]).decode()
    return JSONResponse(body)
