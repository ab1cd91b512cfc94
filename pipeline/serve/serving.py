"""The Ray Serve application: an HTTP ingress (FastAPI) in front of a model deployment.

Routes:
- ``POST /v1/generate``: JSON (``GenerateRequest``) or multipart form (the same fields, ``image`` as
  a file upload). Answers JSON with base64 ``views`` (24 PNGs), ``ply`` (3DGS PLY), optional
  ``grid`` (PNG) and ``gif`` (orbit), or a zip of the same files with ``"format": "zip"``.
- ``GET /v1/health``; ``GET /v1/progress/{request_id}`` (steps done of a request that named itself);
  the OpenAPI schema at ``/openapi.json`` and the docs at ``/docs``.
- ``GET /``: the demo page (``pipeline/serve/web/``: prompt or image in, the orbit, an interactive
  Gaussian viewer and downloads out), whose scripts and style come from ``GET /static/{name}``.

Bad requests get a 4xx naming the problem (422 schema errors and unknown fields, 400 bad base64 or
non-image bytes or a request the model cannot serve, 413 a body over ``max_body_bytes``, read in
chunks so an oversized body is refused before it is all in memory); a request that takes longer
than the timeout gets 504 and a model error 500, while the replica keeps serving. A request whose
client disconnects or times out stops its generation at the next denoising step (Serve cancels the
request; the sampler's step callback sees it), so no orphaned work holds the replica;
``GET /v1/stats`` counts running, completed and cancelled generations.
Compatible requests (same steps, guidance, cameras, 3D-aware settings) are batched into one
sampler call; each sample keeps its own seed, so results do not depend on the batch.
"""

# No "from __future__ import annotations": FastAPI resolves the route signatures at runtime.

import asyncio
import base64
import binascii
import collections
import dataclasses
import io
import json
import logging
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ray import serve

import camera
from models.precision import DTYPE_CHOICES
from pipeline.cli import option
from pipeline.serve.client import RESULT_FILES

logger = logging.getLogger(__name__)
MAX_PROMPT_CHARS = 500
MAX_UPLOAD_BYTES = 7 * 1024 * 1024  # a decoded image; its base64 form still fits the default body limit
MAX_BODY_BYTES = 10 * 1024 * 1024
GPU_BATCH_SIZE = 4  # requests batched on a GPU replica by default
MAX_IMAGE_SIDE = 4096
PROGRESS_KEPT = 1024  # request ids whose progress a replica remembers
WEB_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
WEB_FILES = {"app.js": "text/javascript", "viewer.js": "text/javascript", "zip.js": "text/javascript",
             "style.css": "text/css"}
OUTPUTS = ("views", "ply", "grid", "gif", "mp4", "gaussians_mp4")


@dataclass
class ServeConfig:
    """The Serve application's arguments: ``serve run jobs.serve:app model_dir=DIR [key=value ...]``,
    ``serve_config.yaml``'s ``args``, or the flags of ``python jobs/serve.py`` (``pipeline.cli``)."""

    model_dir: str = option(help="the multi-view model (fine-tuned): a directory, fsspec URI (s3://...) or MLflow "
                                 "model URI (models:/name/latest, runs:/id/final_model)")
    lgm: str | None = option(None, "reconstructor: LGM directory or official .safetensors, at any such location "
                                   "(3D-aware sampling, PLY); default: the model directory's reconstructor/, if any")
    mlflow_uri: str | None = option(None, "MLflow tracking store of models:/ and runs:/ locations "
                                          "(default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    num_gpus: float | None = option(None, "GPUs per model replica (default: 1 where the Ray cluster has GPUs, "
                                          "else 0)")
    max_replicas: int = option(1, "model replicas the autoscaler may start")
    timeout_s: float = option(300.0, "seconds a request may take before it gets 504 and its generation stops")
    max_batch_size: int | None = option(None, "compatible requests batched into one sampler call (1: no batching; "
                                              f"default: {GPU_BATCH_SIZE} on GPU replicas, 1 on CPU ones, where "
                                              "batching gains nothing: docs/costs.md)")
    max_body_bytes: int = option(MAX_BODY_BYTES, "request bodies larger than this get 413")
    dtype: str = option("auto", "weights' precision on the replica (auto: fp16 on a GPU, fp32 on a CPU)",
                        choices=DTYPE_CHOICES)
    use_ema: bool = option(False, "serve G's moving-average weights (ema/, from fine-tuning with --ema-decay)")

    def resolved(self, cluster_has_gpus: bool) -> "ServeConfig":
        """num_gpus and max_batch_size filled in for the cluster: a GPU replica batches (a batch
        fills the device), a CPU replica does not (a batch of 4 takes 4 times as long there, so
        batching only adds latency; measured in docs/costs.md)."""
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {self.dtype!r}")
        if self.num_gpus is None and not cluster_has_gpus:
            # An autoscaling cluster whose GPU nodes are at zero looks CPU-only: say what was chosen.
            logger.warning("the Ray cluster has no GPUs now, so the model replica is a CPU one (num_gpus=0); "
                           "on an autoscaling cluster set num_gpus=1 to have a GPU node started for it")
        gpus = self.num_gpus if self.num_gpus is not None else (1.0 if cluster_has_gpus else 0.0)
        batch = self.max_batch_size if self.max_batch_size is not None else (GPU_BATCH_SIZE if gpus > 0 else 1)
        if batch < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {batch}")
        return dataclasses.replace(self, num_gpus=gpus, max_batch_size=batch)


def cluster_has_gpus() -> bool:
    """Whether the Ray cluster this process is connected to has GPUs (this machine's CUDA when
    Ray is not started yet)."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    return torch.cuda.is_available()


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
    from models.pipeline_videomv.pipeline_videomv import condition_image

    return condition_image(image, size)


class Generator:
    """Model deployment: G, the reconstructor, and the sampler, with request batching."""

    def __init__(self, model_dir: str, lgm: str | None = None, max_batch_size: int = 4,
                 mlflow_uri: str | None = None, dtype: str = "auto", use_ema: bool = False) -> None:
        from models.gaussians.rendering import warm_up
        from models.pipeline_videomv.pipeline_videomv import load_pipeline
        from pipeline.tracking import tracking_uri

        self.pipe = load_pipeline(model_dir, lgm, tracking_uri=tracking_uri(mlflow_uri), dtype=dtype, use_ema=use_ema)
        self.pipe.set_progress_bar_config(disable=True)
        self.model, self.reconstructor = self.pipe.model, self.pipe.reconstructor
        self.resolution = self.model.resolution
        # gsplat builds its CUDA kernels on first use (minutes): here, so the replica is ready only
        # once it can answer, and a fallback to the PyTorch rasteriser shows in /v1/health.
        if self.reconstructor is not None:
            warm_up(self.model.device)
        self._generate_batch.set_max_batch_size(max_batch_size)  # 1 turns batching off
        self._cancelled: dict[int, threading.Event] = {}  # id(job) -> set when its request went away
        self.stats = {"running": 0, "completed": 0, "cancelled": 0}
        self.progress: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    def info(self) -> dict[str, Any]:
        from models.pipeline_videomv.sampling import training_cameras

        from models.gaussians.rendering import backend_in_use
        from models.precision import dtype_name

        rasterizer = backend_in_use(self.model.device) if self.reconstructor is not None else None
        return {"variant": self.model.variant, "reconstructor": self.reconstructor is not None,
                "resolution": self.resolution, "frames": self.model.unet.num_frames,
                "training_cameras": training_cameras(self.model), "device": str(self.model.device),
                "dtype": dtype_name(self.model.unet.dtype), "rasterizer": rasterizer}

    def get_progress(self, request_id: str) -> dict[str, Any]:
        """Steps done of a request named by its ``request_id`` (state "unknown" when this replica
        has not seen it: not arrived yet, or on another replica)."""
        return {"request_id": request_id, **self.progress.get(request_id, {"state": "unknown", "done": 0,
                                                                           "total": 0})}

    def _report_progress(self, jobs: list[Job], state: str, done: int) -> None:
        for job in jobs:
            if job.request_id:
                self.progress[job.request_id] = {"state": state, "done": done, "total": job.steps}
                self.progress.move_to_end(job.request_id)
        while len(self.progress) > PROGRESS_KEPT:
            self.progress.popitem(last=False)

    def get_stats(self) -> dict[str, int]:
        return dict(self.stats)

    async def generate(self, job: Job) -> dict[str, Any] | Exception:
        """One request. Serve cancels this call when the client disconnects or the ingress gives
        up; the event tells the sampling thread, which stops at its next step."""
        cancelled = self._cancelled[id(job)] = threading.Event()
        try:
            return await self._generate_batch(job)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            self._cancelled.pop(id(job), None)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, jobs: list[Job]) -> list[dict[str, Any] | Exception]:
        results: list[dict[str, Any] | Exception | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.batch_key(), []).append(index)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            events = [self._cancelled.get(id(job)) or threading.Event() for job in group]
            self.stats["running"] += len(group)
            try:
                # In a thread, so the replica's event loop stays free to take cancellations.
                outputs = await asyncio.to_thread(self._run, group, events)
                self.stats["completed"] += len(group)
            except GenerationCancelled:
                self.stats["cancelled"] += len(group)
                logger.info("generation of %d request(s) stopped: their clients went away", len(group))
                outputs = [RuntimeError("generation cancelled")] * len(group)
            except Exception as error:  # a model error answers these requests, the replica lives on
                outputs = [RuntimeError(f"generation failed: {type(error).__name__}: {error}")] * len(indices)
            finally:
                self.stats["running"] -= len(group)
            for index, output in zip(indices, outputs):
                results[index] = output
        return results

    def _run(self, jobs: list[Job], cancelled: list[threading.Event]) -> list[dict[str, Any]]:
        from models.gaussians.ply import save_ply
        from models.gaussians.rendering import render_batch
        from models.pipeline_videomv.sampling import DEFAULTS
        from pipeline.serve.media import grid_image, orbit_gif, orbit_mp4, png_bytes, to_uint8

        first = jobs[0]

        self._report_progress(jobs, "running", 0)

        def stop_when_abandoned(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            self._report_progress(jobs, "running", index + 1)
            if all(event.is_set() for event in cancelled):
                raise GenerationCancelled(f"stopped after {index + 1} of {first.steps} steps")
            return tensors

        start = time.perf_counter()
        inputs: dict[str, Any] = ({"prompt": [job.prompt for job in jobs]} if self.model.variant == "t2v"
                                  else {"image": torch.stack([job.image for job in jobs]) / 2 + 0.5})
        result = self.pipe(**inputs, num_inference_steps=first.steps, guidance_scale=first.guidance_scale,
                           elevation=first.elevation, three_d_aware=first.three_d_aware, three_d_aware_mode=first.mode,
                           generator=[torch.Generator().manual_seed(job.seed) for job in jobs], output_type="pt",
                           callback_on_step_end=stop_when_abandoned)
        self._report_progress(jobs, "done", first.steps)
        seconds = time.perf_counter() - start
        answers = []
        for index, job in enumerate(jobs):
            frames = to_uint8(result.frames[index])
            answer: dict[str, Any] = {"seed": job.seed, "seconds": seconds, "reconstructions": result.reconstructions,
                                      "batch_size": len(jobs)}
            if "views" in job.outputs:
                answer["views"] = [png_bytes(frame) for frame in frames]
            if "grid" in job.outputs:
                answer["grid"] = png_bytes(grid_image(frames))
            if "gif" in job.outputs:
                answer["gif"] = orbit_gif(frames)
            if "mp4" in job.outputs:
                answer["mp4"] = orbit_mp4(frames)
            if "gaussians_mp4" in job.outputs and result.gaussians is not None:
                c2w = torch.as_tensor(result.cameras[index])[None].to(self.model.device)
                rendered, _ = render_batch(result.gaussians[index].as_batch(), c2w, camera.DEFAULT_FOV_DEG,
                                           self.resolution, DEFAULTS[self.model.variant]["background"])
                answer["gaussians_mp4"] = orbit_mp4(rendered[0].clamp(0, 1))
            if "ply" in job.outputs and result.gaussians is not None:
                buffer = io.BytesIO()
                save_ply(result.gaussians[index], buffer)
                answer["ply"] = buffer.getvalue()
            answers.append(answer)
        return answers


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read in chunks; HTTP 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_ingress(timeout_s: float, max_body_bytes: int = MAX_BODY_BYTES) -> type:
    app = FastAPI(title="VideoMV", version="1", description="24-view generation with 3D-aware sampling")

    @serve.ingress(app)
    class Ingress:
        def __init__(self, generator: Any) -> None:
            self.generator = generator
            self._info: dict[str, Any] | None = None

        async def info(self) -> dict[str, Any]:
            if self._info is None:
                self._info = await self.generator.info.remote()
            return self._info

        @app.get("/v1/health")
        async def health(self) -> dict[str, Any]:
            """The model's facts, its device and dtype, and the Gaussian rasteriser in use now
            (``rasterizer.fallback`` says why a GPU replica renders without gsplat)."""
            return {"status": "ok", **(await self.generator.info.remote())}

        @app.get("/", include_in_schema=False)
        async def page(self) -> FileResponse:
            """The demo page (pipeline/serve/web/): everything it loads comes from this app."""
            return FileResponse(os.path.join(WEB_FOLDER, "index.html"), media_type="text/html")

        @app.get("/static/{name}", include_in_schema=False)
        async def static(self, name: str) -> FileResponse:
            if name not in WEB_FILES:
                raise HTTPException(404, f"no file {name!r}")
            return FileResponse(os.path.join(WEB_FOLDER, name), media_type=WEB_FILES[name])

        @app.get("/v1/progress/{request_id}")
        async def progress(self, request_id: str) -> dict[str, Any]:
            """Steps done of the request sent with this ``request_id`` (exact with one model replica;
            with several, a replica that is not running it answers state "unknown")."""
            return await self.generator.get_progress.remote(request_id)

        @app.get("/v1/stats")
        async def stats(self) -> dict[str, int]:
            """Generations running now, completed, and stopped because their request went away."""
            return await self.generator.get_stats.remote()

        @app.post("/v1/generate", openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": GenerateRequest.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}, "params": {"type": "string",
                                                                             "description": "JSON of the other fields"}}}},
        }}})
        async def generate(self, request: Request) -> Response:
            info = await self.info()
            request_model, image_bytes = await self._parse(request)
            if info["variant"] == "t2v" and request_model.prompt is None:
                raise HTTPException(400, "this is a text-to-multi-view model: give a prompt")
            if info["variant"] == "i2v" and image_bytes is None:
                raise HTTPException(400, "this is an image-to-multi-view model: give an image")
            if request_model.prompt is not None and image_bytes is not None:
                raise HTTPException(400, "give either a prompt or an image, not both")
            needs_gaussians = {"ply", "gaussians_mp4"} & set(request_model.outputs)
            if (request_model.three_d_aware or needs_gaussians) and not info["reconstructor"]:
                raise HTTPException(400, "no reconstructor is loaded: set three_d_aware false and leave out "
                                         "'ply' and 'gaussians_mp4'")
            if request_model.elevation is not None:
                from models.generator.camera_embedding import camera_problems

                problems = camera_problems(info.get("training_cameras"), elevation=request_model.elevation)
                if problems:
                    raise HTTPException(422, "; ".join(problems) + ": the model has not learned views there")
            job = Job(prompt=request_model.prompt,
                      image=decode_image(image_bytes, info["resolution"]) if image_bytes is not None else None,
                      seed=request_model.seed, steps=request_model.steps, guidance_scale=request_model.guidance_scale,
                      elevation=request_model.elevation, three_d_aware=request_model.three_d_aware,
                      mode=request_model.mode, outputs=tuple(request_model.outputs),
                      request_id=request_model.request_id)
            response = self.generator.generate.remote(job)
            try:
                answer = await asyncio.wait_for(response, timeout=timeout_s)
            except asyncio.TimeoutError:
                response.cancel()  # the generation stops at its next step
                raise HTTPException(504, f"generation took longer than {timeout_s:.0f} s") from None
            except asyncio.CancelledError:
                response.cancel()  # the client went away
                raise
            except Exception as error:
                raise HTTPException(500, f"generation failed: {error}") from None
            if isinstance(answer, Exception):
                raise HTTPException(500, str(answer))
            return _respond(answer, request_model.format)

        async def _parse(self, request: Request) -> tuple[GenerateRequest, bytes | None]:
            body = await read_body(request, max_body_bytes)
            content_type = request.headers.get("content-type", "")
            image_bytes = None
            if content_type.startswith("multipart/form-data"):
                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                form = await Request(request.scope, replay).form()
                fields = {k: v for k, v in form.items() if k not in ("image", "params")}
                if "params" in form:
                    try:
                        fields.update(json.loads(form["params"]))
                    except (json.JSONDecodeError, TypeError):
                        raise HTTPException(400, "form field 'params' is not JSON") from None
                upload = form.get("image")
                if upload is not None and hasattr(upload, "read"):
                    image_bytes = await upload.read(MAX_UPLOAD_BYTES + 1)
                if isinstance(fields.get("outputs"), str):
                    fields["outputs"] = [v for v in fields["outputs"].split(",") if v]
            else:
                try:
                    fields = json.loads(body)
                except json.JSONDecodeError as error:
                    raise HTTPException(400, f"body is not JSON: {error}") from None
                if not isinstance(fields, dict):
                    raise HTTPException(400, "body must be a JSON object")
            try:
                parsed = GenerateRequest(**fields)
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors())
                raise HTTPException(422, problems) from None
            if parsed.image is not None:
                if len(parsed.image) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
                    raise HTTPException(413, f"image is larger than {MAX_UPLOAD_BYTES} bytes")
                try:
                    image_bytes = base64.b64decode(parsed.image, validate=True)
                except (binascii.Error, ValueError):
                    raise HTTPException(400, "image is not valid base64") from None
            return parsed, image_bytes

    return Ingress


def _respond(answer: dict[str, Any], form: str) -> Response:
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


def build_app(model_dir: str, lgm: str | None = None, **options: Any) -> Any:
    """The Serve application: ``Ingress`` -> ``Generator`` (GPU actor, autoscaled). ``options`` are
    the other fields of ``ServeConfig`` (num_gpus, max_replicas, timeout_s, ...), with its defaults."""
    config = ServeConfig(model_dir=model_dir, lgm=lgm, **options).resolved(cluster_has_gpus())
    generator = serve.deployment(
        Generator,
        name="Generator",
        ray_actor_options={"num_gpus": config.num_gpus},
        autoscaling_config={"min_replicas": 1, "max_replicas": config.max_replicas,
                            "target_ongoing_requests": config.max_batch_size},
        max_ongoing_requests=config.max_batch_size * 2,
    )
    ingress = serve.deployment(build_ingress(config.timeout_s, config.max_body_bytes), name="Ingress",
                               max_ongoing_requests=64)
    return ingress.bind(generator.bind(config.model_dir, config.lgm, config.max_batch_size, config.mlflow_uri,
                                       config.dtype, config.use_ema))
