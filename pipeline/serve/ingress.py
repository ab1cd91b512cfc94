"""The HTTP ingress of the Serve app (FastAPI, on a CPU): routes, body limits, request parsing and
validation; it hands a ``Job`` to the model deployment and encodes its answer. It imports no model
code (the image decoder is PIL only): it never needs a GPU or the model libraries.
"""

# No "from __future__ import annotations": FastAPI resolves the route signatures at runtime.

import asyncio
import base64
import binascii
import collections
import html
import math
import json
import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from ray import serve

from camera.training_cameras import camera_problems
from models.pipeline_videomv.image_input import background_remover
from models.variants import VARIANTS
from pipeline.serve.config import BODY_TIMEOUT_S, LOOPBACK_HOSTS, MAX_BODY_BYTES
from pipeline.serve.api import (
    MAX_DETAIL_CHARS,
    MAX_UPLOAD_BYTES,
    GAUSSIAN_OUTPUTS,
    REQUEST_ID_PATTERN,
    GenerateRequest,
    GenerationTimedOut,
    Job,
    decode_image,
    issue_request_id,
    parse_fields,
    request_id_issued,
    respond,
)

WEB_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
# Everything the page may load (an allowlist: /static/ serves nothing else), all from this app.
WEB_FILES = {"app.js": "text/javascript", "viewer.js": "text/javascript", "zip.js": "text/javascript",
             "splat_viewer.js": "text/javascript", "vendor/gsplat/gsplat.es.js": "text/javascript",
             "mesh_viewer.js": "text/javascript", "webgl.js": "text/javascript",
             "vendor/three/three.module.min.js": "text/javascript",
             "vendor/three/examples/jsm/loaders/GLTFLoader.js": "text/javascript",
             "vendor/three/examples/jsm/controls/OrbitControls.js": "text/javascript",
             "vendor/three/examples/jsm/utils/BufferGeometryUtils.js": "text/javascript",
             "style.css": "text/css"}
BODY_TYPES = ("application/json", "multipart/form-data")
JSON_MAX_DEPTH = 32  # deeper nesting is refused before json parses it (its recursion would be the limit)
JSON_ON_LOOP_BYTES = 64 * 1024  # larger bodies are scanned and parsed in a thread: the event loop serves everyone
DEFAULT_RETRY_AFTER_S = 10  # Retry-After of a 503 before any generation has finished here


def host_name(value: str) -> str:
    """The host of a Host header or an origin's netloc, without port and brackets, lower case."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or host_name(host) in {h.lower().strip("[]") for h in allowed}


def cross_site_problem(headers: Any, allowed_origins: tuple[str, ...]) -> str | None:
    """Why a POST comes from another site's page (None: it does not). Browsers send ``Origin`` and
    ``Sec-Fetch-Site`` with every POST; clients that are not browsers send neither."""
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if origin is not None:
        if origin in allowed_origins or "*" in allowed_origins:
            return None
        parts = urlsplit(origin)
        if parts.netloc.lower() != headers.get("host", "").lower():
            return f"requests from the page at {origin[:100]} are not allowed"
    if site is not None and site not in ("same-origin", "none") and not (origin and origin in allowed_origins):
        return f"cross-site requests are not allowed (Sec-Fetch-Site: {site[:20]})"
    return None


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays or objects deeper than ``limit`` (brackets in strings
    are skipped). At C speed (a regular expression, bytes.translate, a NumPy running sum): a
    10 MiB body takes milliseconds, where a Python loop over its bytes took a second."""
    # Nesting needs an opening bracket per level, so a body with few (strings' own counted) is not
    # too deep: found by memchr-speed counts, which spares the common large body (one long string)
    # the string-skipping scan, 4/5 of its parse while it holds the GIL (tests/test_serve.py).
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    codes = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((codes == 0x5B) | (codes == 0x7B), 1, -1)).max()) > limit


class _NonStandardJSON(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON (RFC 8259) has no such values."""


def _refuse_constant(name: str) -> Any:
    raise _NonStandardJSON(name)


def docs_page(schema: dict[str, Any]) -> str:
    """The API's reference as one self-contained HTML page, from its OpenAPI schema (no scripts:
    FastAPI's default /docs loads Swagger UI from a CDN)."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            rows.append(f"<h2><code>{html.escape(method.upper())} {html.escape(path)}</code></h2>"
                        f"<p>{html.escape(operation.get('description') or operation.get('summary') or '')}</p>")
    fields = []
    for name, field in GenerateRequest.model_json_schema().get("properties", {}).items():
        fields.append(f"<tr><td><code>{html.escape(name)}</code></td>"
                      f"<td>{html.escape(field.get('description', ''))}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>VideoMV API</title></head><body>"
            "<h1>VideoMV API</h1><p>The schema: <a href='openapi.json'>openapi.json</a>.</p>" + "".join(rows)
            + "<h2>POST /v1/generate fields</h2><table>" + "".join(fields) + "</table></body></html>")


async def read_body(request: Request, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The request body, read in chunks; HTTP 413 as soon as it passes ``limit`` bytes, 408 when
    it has not all arrived within ``timeout_s`` (a slow client cannot hold a connection forever)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is {declared[:20]} bytes; the limit is {limit}")
    chunks, size = [], 0
    deadline = time.monotonic() + timeout_s
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise HTTPException(408, f"the request body did not arrive within {timeout_s:g} s") from None
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_ingress(timeout_s: float, max_body_bytes: int = MAX_BODY_BYTES,
                  allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS, allowed_origins: tuple[str, ...] = (),
                  body_timeout_s: float = BODY_TIMEOUT_S, rembg_model: str | None = None,
                  max_queued: int = 8, request_id_secret: bytes = b"") -> type:
    """The ingress deployment class. ``allowed_hosts``: the Host names it answers (DNS rebinding:
    a page on another name that resolves here gets 421); "*" for any. ``allowed_origins``: pages
    on other origins that may POST (the app's own page always may). ``rembg_model``: a local rembg
    ONNX file that removes the backgrounds of uploads without an alpha channel (without it, such
    an image must have a plain background). ``timeout_s``: seconds of work a generation may take,
    counted from when it starts (not its time in the queue). ``max_queued``: generations this
    ingress replica holds at once (waiting or running); one more gets 503 with Retry-After at
    once. ``request_id_secret``: the key of the server-made request ids (``issue_request_id``),
    the same for every replica."""
    secret = request_id_secret or os.urandom(32)
    # The safety net of a wait: every queued generation ahead of this one running its full time.
    wait_limit_s = timeout_s * (max_queued + 1)
    # FastAPI's /docs and /redoc load their scripts from a CDN: replaced by a page of our own.
    app = FastAPI(title="VideoMV", version="1", description="24-view generation with 3D-aware sampling",
                  docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        host = request.headers.get("host", "")
        if not host_allowed(host, tuple(allowed_hosts)):
            return JSONResponse({"detail": f"host {host[:100]!r} is not served here (allowed_hosts)"}, status_code=421)
        if request.method == "POST":
            problem = cross_site_problem(request.headers, tuple(allowed_origins))
            if problem:
                return JSONResponse({"detail": problem + " (allowed_origins)"}, status_code=403)
        try:
            return await call_next(request)
        except Exception as error:  # never a 500 with a trace for what the request did: say what failed
            return JSONResponse({"detail": f"the request could not be handled: {type(error).__name__}"},
                                status_code=500)

    @serve.ingress(app)
    class Ingress:
        def __init__(self, model: Any) -> None:
            self.model = model  # the model deployment's handle
            self._info: dict[str, Any] | None = None
            self.remove_background = background_remover(rembg_model) if rembg_model else None
            self.in_flight = 0  # generations this replica holds (waiting or running)
            self.counters = {"rejected": 0}
            self.recent_seconds: collections.deque[float] = collections.deque(maxlen=16)

        def retry_after_s(self) -> int:
            """How long a refused client should wait: the queue's length times a recent generation's time."""
            if not self.recent_seconds:
                return DEFAULT_RETRY_AFTER_S
            typical = sorted(self.recent_seconds)[len(self.recent_seconds) // 2]
            return max(1, math.ceil(typical * max(1, self.in_flight) / max(1, max_queued // 2)))

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

        @app.get("/static/{name:path}", include_in_schema=False)
        async def static(self, name: str) -> FileResponse:
            if name not in WEB_FILES:
                raise HTTPException(404, f"no file {name!r}")
            return FileResponse(os.path.join(WEB_FOLDER, name), media_type=WEB_FILES[name])

        @app.get("/docs", include_in_schema=False)
        async def docs(self) -> HTMLResponse:
            """The API reference, served from this app alone."""
            return HTMLResponse(docs_page(app.openapi()))

        @app.post("/v1/requests")
        async def new_request(self) -> dict[str, str]:
            """A request id for one ``POST /v1/generate`` (its ``request_id`` field): made by the
            server, unguessable, good for one request; ``GET /v1/progress/{request_id}`` then
            follows that request. Only its holder can read that progress."""
            return {"request_id": issue_request_id(secret)}

        @app.get("/v1/progress/{request_id}")
        async def progress(self, request_id: str) -> dict[str, Any]:
            """Steps done of the request sent with this ``request_id`` and its state: queued,
            running, done, cancelled, timed_out or failed ("unknown" before it arrives; with several
            model replicas, one that is not running it also answers "unknown")."""
            if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
                raise HTTPException(422, "request_id: 1 to 64 letters, digits, '_' or '-'")
            if not request_id_issued(secret, request_id):
                raise HTTPException(404, "no such request_id: ask POST /v1/requests for one")
            return await self.model.get_progress.remote(request_id)

        @app.get("/v1/stats")
        async def stats(self) -> dict[str, int]:
            """Generations running now, completed, cancelled (their request went away), timed out
            and failed (the model's replicas); refused with 503 for a full queue, and held now
            (waiting or running: this ingress replica)."""
            return {**await self.model.get_stats.remote(), **self.counters, "in_flight": self.in_flight}

        @app.post("/v1/generate", openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": GenerateRequest.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}, "params": {"type": "string",
                                                                             "description": "JSON of the other fields"}}}},
        }}})
        async def generate(self, request: Request) -> Response:
            if self.in_flight >= max_queued:  # at once, before reading the body: a full queue only grows
                self.counters["rejected"] += 1
                retry = self.retry_after_s()
                return JSONResponse({"detail": f"the server is busy ({self.in_flight} generations held, the limit "
                                               f"is {max_queued}): retry in {retry} s"},
                                    status_code=503, headers={"retry-after": str(retry)})
            self.in_flight += 1
            try:
                return await self._generate(request)
            finally:
                self.in_flight -= 1

        async def _generate(self, request: Request) -> Response:
            info = await self.info()
            request_model, image_bytes = await self._parse(request)
            if request_model.request_id is not None and not request_id_issued(secret, request_model.request_id):
                raise HTTPException(422, "request_id was not made by this server: ask POST /v1/requests for one")
            variant = VARIANTS[info["variant"]]
            if variant.takes_prompt and request_model.prompt is None:
                raise HTTPException(400, "this is a text-to-multi-view model: give a prompt")
            if variant.takes_image and image_bytes is None:
                raise HTTPException(400, "this is an image-to-multi-view model: give an image")
            if request_model.prompt is not None and image_bytes is not None:
                raise HTTPException(400, "give either a prompt or an image, not both")
            needs_gaussians = set(GAUSSIAN_OUTPUTS) & set(request_model.outputs)
            if (request_model.three_d_aware or needs_gaussians) and not info["reconstructor"]:
                raise HTTPException(400, "no reconstructor is loaded: set three_d_aware false and leave out "
                                         + ", ".join(repr(name) for name in GAUSSIAN_OUTPUTS))
            if request_model.elevation is not None:
                problems = camera_problems(info.get("training_cameras"), elevation=request_model.elevation)
                if problems:
                    raise HTTPException(422, "; ".join(problems) + ": the model has not learned views there")
            # Decoding takes up to a second for a large image: off the event loop, which serves everyone.
            image = (await asyncio.to_thread(decode_image, image_bytes, info["resolution"],
                                             VARIANTS[info["variant"]].background, self.remove_background)
                     if image_bytes is not None else None)
            job = Job(prompt=request_model.prompt, image=image,
                      seed=request_model.seed, steps=request_model.steps, guidance_scale=request_model.guidance_scale,
                      elevation=request_model.elevation, three_d_aware=request_model.three_d_aware,
                      mode=request_model.mode, outputs=tuple(request_model.outputs),
                      request_id=request_model.request_id, time_limit_s=timeout_s)
            response = self.model.generate.remote(job)
            start = time.monotonic()
            try:
                answer = await asyncio.wait_for(response, timeout=wait_limit_s)
            except asyncio.TimeoutError:
                response.cancel()  # the generation stops at its next step or stage
                raise HTTPException(504, f"generation did not finish within {wait_limit_s:.0f} s of waiting") from None
            except asyncio.CancelledError:
                response.cancel()  # the client went away
                raise
            except Exception as error:
                raise HTTPException(500, f"generation failed: {str(error)[:MAX_DETAIL_CHARS]}") from None
            if isinstance(answer, GenerationTimedOut):
                raise HTTPException(504, str(answer)[:MAX_DETAIL_CHARS])
            if isinstance(answer, ValueError):  # the request's own fault (a request_id used twice)
                raise HTTPException(409, str(answer)[:MAX_DETAIL_CHARS])
            if isinstance(answer, Exception):
                raise HTTPException(500, str(answer)[:MAX_DETAIL_CHARS])
            self.recent_seconds.append(time.monotonic() - start)
            return respond(answer, request_model.format)

        async def _parse(self, request: Request) -> tuple[GenerateRequest, bytes | None]:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in BODY_TYPES:
                raise HTTPException(415, "send application/json, or multipart/form-data with an image file")
            body = await read_body(request, max_body_bytes, body_timeout_s)
            image_bytes = None
            form_fields: dict[str, str] = {}
            if content_type == "multipart/form-data":
                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                try:
                    form = await Request(request.scope, replay).form()
                except Exception:  # python-multipart's errors: a form that is not one
                    raise HTTPException(400, "body is not a readable multipart form") from None
                form_fields = {k: v for k, v in form.items() if k not in ("image", "params") and isinstance(v, str)}
                if any(not isinstance(v, str) for k, v in form.items() if k not in ("image",)):
                    raise HTTPException(400, "only 'image' may be a file in the form")
                fields = self._json_object(form["params"].encode(), "form field 'params'") if "params" in form else {}
                upload = form.get("image")
                if upload is not None and hasattr(upload, "read"):
                    image_bytes = await upload.read(MAX_UPLOAD_BYTES + 1)
                if "outputs" in form_fields:
                    form_fields["outputs"] = [v for v in form_fields["outputs"].split(",") if v]  # type: ignore[assignment]
            elif len(body) > JSON_ON_LOOP_BYTES:
                fields = await asyncio.to_thread(self._json_object, body, "body")
            else:
                fields = self._json_object(body, "body")
            parsed = parse_fields(fields, form_fields)
            if parsed.image is not None:
                if len(parsed.image) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
                    raise HTTPException(413, f"image is larger than {MAX_UPLOAD_BYTES} bytes")
                try:
                    image_bytes = base64.b64decode(parsed.image, validate=True)
                except (binascii.Error, ValueError):
                    raise HTTPException(400, "image is not valid base64") from None
            return parsed, image_bytes

        @staticmethod
        def _json_object(text: bytes, what: str) -> dict[str, Any]:
            """``text`` as a JSON object; HTTP 400 naming what is wrong (not UTF-8, not JSON, nested
            too deep, a number too long, not an object)."""
            if json_too_deep(text):
                raise HTTPException(400, f"{what} nests deeper than {JSON_MAX_DEPTH} levels")
            try:
                fields = json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)
            except _NonStandardJSON as error:
                raise HTTPException(400, f"{what} is not JSON: {error} is not a JSON value") from None
            except UnicodeDecodeError:
                raise HTTPException(400, f"{what} is not UTF-8 text") from None
            except json.JSONDecodeError as error:
                raise HTTPException(400, f"{what} is not JSON: {error.msg} at position {error.pos}") from None
            except (ValueError, RecursionError):  # e.g. an integer of more digits than Python converts
                raise HTTPException(400, f"{what} holds a value out of range (an over-long number?)") from None
            if not isinstance(fields, dict):
                raise HTTPException(400, f"{what} must be a JSON object")
            return fields

    return Ingress
