"""The HTTP API of the Serve app: the request schema, its limits, the job a request becomes, and the
encoding of an answer (JSON with base64 files, or a zip). Light: the ingress imports it, and so
does the model deployment, without either importing the other.
"""

# No "from __future__ import annotations": FastAPI and pydantic resolve the annotations at runtime.

import base64
import hashlib
import hmac
import io
import json
import secrets
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import torch
from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.pipeline_videomv.image_input import IMAGE_MODEL_BACKGROUND, ImageInputError, condition_image
from pipeline.serve.client import RESULT_FILES

MAX_PROMPT_CHARS = 500
MAX_UPLOAD_BYTES = 7 * 1024 * 1024  # a decoded image; its base64 form still fits the default body limit
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE  # more is a decompression bomb: 413 before decoding
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what the decoder opens; nothing else reaches Pillow's other plugins
OUTPUTS = ("views", "ply", "splat", "glb", "grid", "gif", "mp4", "gaussians_mp4")
GAUSSIAN_OUTPUTS = ("ply", "splat", "glb", "gaussians_mp4")  # what needs a reconstructor
MAX_ERRORS_LISTED = 5  # validation errors in one answer: an answer stays a few KB whatever the body
MAX_DETAIL_CHARS = 2000
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class GenerationCancelled(Exception):
    """Every request of a batch went away (client disconnect or timeout): stop sampling."""


class GenerationTimedOut(Exception):
    """A batch's work passed its time limit (counted from when the work started, not the queue)."""


def issue_request_id(secret: bytes) -> str:
    """A request id the server makes (``POST /v1/requests``): 32 random hex digits and their HMAC
    under ``secret``, so any ingress replica knows its own ids without shared state, and nobody
    can guess another client's (64 hex digits, within ``REQUEST_ID_PATTERN``)."""
    nonce = secrets.token_hex(16)
    return nonce + hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]


def request_id_issued(secret: bytes, request_id: str) -> bool:
    """Whether ``issue_request_id(secret)`` made ``request_id``."""
    if len(request_id) != 64:
        return False
    nonce, mac = request_id[:32], request_id[32:]
    return hmac.compare_digest(mac, hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()[:32])


class GenerateRequest(BaseModel):
    """One generation. Exactly one of ``prompt`` (text model) or ``image`` (image model)."""

    # Strict: JSON types as the schema says (no true for 1, no "7" for 7); form fields, which are
    # text by nature, are converted by ``parse_fields``.
    model_config = ConfigDict(extra="forbid", strict=True)

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
    outputs: list[Literal[OUTPUTS]] = Field(  # type: ignore[valid-type]  # Literal[("a", "b")] is Literal["a", "b"]
        default_factory=lambda: ["views", "ply"], min_length=1, max_length=len(OUTPUTS), description=(
            "views (24 PNGs), ply (the Gaussians, 3DGS PLY), splat (the same, 32 bytes each for web viewers), glb "
            "(a textured mesh of the Gaussians), grid (PNG), gif and mp4 (the orbit), gaussians_mp4 (the Gaussians "
            "rendered at the 24 cameras); ply, splat, glb and gaussians_mp4 need a reconstructor"))
    format: Literal["json", "zip"] = "json"
    request_id: str | None = Field(None, pattern=REQUEST_ID_PATTERN, description=(
        "an id from POST /v1/requests (made by the server, used once): GET /v1/progress/{request_id} reports "
        "this request's steps done"))

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt is empty")
        return value.strip() if value is not None else None

    @field_validator("outputs")
    @classmethod
    def _outputs_once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("outputs lists an output twice")
        return value


def validation_problems(error: ValidationError) -> str:
    """A validation error as a short message: the first ``MAX_ERRORS_LISTED`` problems (field and
    reason; never the input itself), at most ``MAX_DETAIL_CHARS`` characters."""
    problems = []
    for item in error.errors(include_input=False, include_url=False)[:MAX_ERRORS_LISTED]:
        where = ".".join(str(part)[:40] for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg'][:200]}")
    more = error.error_count() - len(problems)
    text = "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
    return text[:MAX_DETAIL_CHARS]


def parse_fields(json_fields: dict[str, Any], form_fields: dict[str, str] | None = None) -> GenerateRequest:
    """The request from its JSON fields (strict types) and, for multipart forms, its text fields
    (converted from text as the schema's types say); HTTP 422 naming the problems."""
    try:
        GenerateRequest.model_validate(json_fields)  # the JSON part alone, strictly
        return GenerateRequest.model_validate({**json_fields, **(form_fields or {})},
                                              strict=not form_fields)
    except ValidationError as error:
        raise HTTPException(422, validation_problems(error)) from None


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
    time_limit_s: float | None = None  # seconds of work (from its start) before it stops: GenerationTimedOut

    def batch_key(self) -> tuple:
        return (self.steps, self.guidance_scale, self.elevation, self.three_d_aware, self.mode,
                self.prompt is None, None if self.image is None else tuple(self.image.shape))


def decode_image(data: bytes, size: int, background: tuple[float, float, float] = IMAGE_MODEL_BACKGROUND,
                 remove_background: Any | None = None) -> torch.Tensor:
    """Image bytes (PNG, JPEG or WebP) -> [3, size, size] in [-1, 1] (``condition_image``: EXIF
    orientation applied, 16-bit converted, the object masked, centred and scaled as in the renders,
    on ``background``); HTTP 413 over the limits (bytes, side, pixels: a decompression bomb is
    refused before it is decoded), 400 for bytes that are not one of those formats (other formats
    never reach Pillow's other plugins), 422 for an image with no alpha and a cluttered background
    (the message says how to fix it) or with no object in it."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"image is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image has over {MAX_IMAGE_PIXELS} pixels (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise HTTPException(400, "image is not a readable PNG, JPEG or WebP file") from None
    width, height = image.size
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise HTTPException(413, f"image is {width}x{height}; the limit is {MAX_IMAGE_SIDE} per side")
    try:
        image.load()
        return condition_image(image, size, background, remove_background)
    except ImageInputError as error:
        raise HTTPException(422, str(error)) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise HTTPException(400, "image is truncated or damaged: it could not be decoded") from None


def respond(answer: dict[str, Any], form: str) -> Response:
    if form == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for index, view in enumerate(answer.get("views", [])):
                archive.writestr(f"views/view_{index:03d}.png", view)
            for key, name in RESULT_FILES.items():
                if key in answer:
                    archive.writestr(name, answer[key])
            if answer.get("unavailable"):
                archive.writestr("unavailable.json", json.dumps(answer["unavailable"], indent=2))
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"content-disposition": 'attachment; filename="videomv.zip"'})
    body: dict[str, Any] = {k: answer[k] for k in ("seed", "seconds", "reconstructions", "batch_size")}
    if answer.get("unavailable"):  # outputs asked for that this generation cannot give, with the reason
        body["unavailable"] = answer["unavailable"]
    if "views" in answer:
        body["views"] = [base64.b64encode(view).decode() for view in answer["views"]]
    for key in RESULT_FILES:
        if key in answer:
            body[key] = base64.b64encode(answer[key]).decode()
    return JSONResponse(body)
