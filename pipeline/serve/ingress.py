"""The HTTP ingress of the Serve app (FastAPI, on a CPU): routes, body limits, request parsing and
validation; it hands a ``Job`` to the model deployment and encodes its answer. It imports no model
code (the image decoder is PIL only): it never needs a GPU or the model libraries.
"""

# No "from __future__ import annotations": FastAPI resolves the route signatures at runtime.

import asyncio
import base64
import binascii
import json
import os
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from ray import serve

from camera.training_cameras import camera_problems
from pipeline.serve.api import MAX_BODY_BYTES, MAX_UPLOAD_BYTES, GenerateRequest, Job, decode_image, respond

WEB_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
WEB_FILES = {"app.js": "text/javascript", "viewer.js": "text/javascript", "zip.js": "text/javascript",
             "style.css": "text/css"}


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
        def __init__(self, model: Any) -> None:
            self.model = model  # the model deployment's handle
            self._info: dict[str, Any] | None = None

        async def info(self) -> dict[str, Any]:
            if self._info is None:
                self._info = await self.model.info.remote()
            return self._info

        @app.get("/v1/health")
        async def health(self) -> dict[str, Any]:
            """The model's facts, its device and dtype, and the Gaussian rasteriser in use now
            (``rasterizer.fallback`` says why a GPU replica renders without gsplat)."""
            return {"status": "ok", **(await self.model.info.remote())}

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
            return await self.model.get_progress.remote(request_id)

        @app.get("/v1/stats")
        async def stats(self) -> dict[str, int]:
            """Generations running now, completed, and stopped because their request went away."""
            return await self.model.get_stats.remote()

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
                problems = camera_problems(info.get("training_cameras"), elevation=request_model.elevation)
                if problems:
                    raise HTTPException(422, "; ".join(problems) + ": the model has not learned views there")
            job = Job(prompt=request_model.prompt,
                      image=decode_image(image_bytes, info["resolution"]) if image_bytes is not None else None,
                      seed=request_model.seed, steps=request_model.steps, guidance_scale=request_model.guidance_scale,
                      elevation=request_model.elevation, three_d_aware=request_model.three_d_aware,
                      mode=request_model.mode, outputs=tuple(request_model.outputs),
                      request_id=request_model.request_id)
            response = self.model.generate.remote(job)
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
            return respond(answer, request_model.format)

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
