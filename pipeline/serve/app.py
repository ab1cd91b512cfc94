"""The Ray Serve application: an HTTP ingress (FastAPI, CPU) in front of the model deployment
(autoscaled replicas, a GPU each where the cluster has GPUs).

Routes (``pipeline.serve.ingress``):
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
request; the pipeline's step callback sees it), so no orphaned work holds the replica;
``GET /v1/stats`` counts running, completed and cancelled generations.
Compatible requests (same steps, guidance, cameras, 3D-aware settings) are batched into one
pipeline call (``pipeline.serve.deployment``); each sample keeps its own seed, so results do not
depend on the batch.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import warnings
from typing import Any

import ray
import torch
from ray import serve

from pipeline.cli import config_from_strings
from pipeline.serve.config import CONTROLLER_OPTIONS, ServeConfig
from pipeline.serve.ingress import build_ingress

logger = logging.getLogger(__name__)
DEPLOYMENT_NAME = "VideoMV"  # the model deployment, as ``serve status`` lists it


def cluster_has_gpus() -> bool:
    """Whether the Ray cluster this process is connected to has GPUs (this machine's CUDA when
    Ray is not started yet)."""
    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    return torch.cuda.is_available()


def build_app(model_dir: str, reconstructor: str | None = None, **options: Any) -> Any:
    """The Serve application: ``Ingress`` -> ``VideoMVDeployment`` (GPU actor, autoscaled).
    ``options`` are the other fields of ``ServeConfig`` (num_gpus, max_replicas, timeout_s, ...),
    with its defaults; ``lgm=`` is the deprecated name of ``reconstructor=``."""
    if "lgm" in options:
        if reconstructor is not None:
            raise ValueError("give reconstructor= or its deprecated alias lgm=, not both")
        warnings.warn("lgm= is deprecated and will be removed in the next release: use reconstructor=", FutureWarning,
                      stacklevel=2)
        reconstructor = options.pop("lgm")
    # Imported here so that importing the app's configuration (jobs/serve.py --help) loads no model code.
    from pipeline.serve.deployment import VideoMVDeployment

    config = ServeConfig(model_dir=model_dir, reconstructor=reconstructor, **options).resolved(cluster_has_gpus())
    model = serve.deployment(
        VideoMVDeployment,
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_gpus": config.num_gpus},
        autoscaling_config={"min_replicas": 1, "max_replicas": config.max_replicas,
                            "target_ongoing_requests": config.max_batch_size},
        max_ongoing_requests=config.max_batch_size * 2,
    )
    ingress = serve.deployment(build_ingress(config.timeout_s, config.max_body_bytes, config.allowed_hosts,
                                             config.allowed_origins, config.body_timeout_s, config.rembg_model,
                                             max_queued=config.max_queued,
                                             request_id_secret=secrets.token_bytes(32)),
                               name="Ingress",
                               max_ongoing_requests=max(64, 2 * config.max_queued))
    return ingress.bind(model.bind(config.model_dir, config.reconstructor, config.max_batch_size, config.mlflow_uri,
                                   config.dtype, config.use_ema, config.mesh_max_faces))


def app(args: dict[str, str]) -> Any:
    """The application builder of ``serve_config.yaml`` and ``serve run pipeline.serve.app:app
    model_dir=DIR [key=value ...]``: ``args`` are ``ServeConfig``'s fields as strings. An installed
    module (not a file of the working dir), so the Serve controller imports it on any node where
    the project is installed, with no ``runtime_env``."""
    return build_app(**dataclasses.asdict(config_from_strings(ServeConfig, args)))


def start_http(host: str, port: int) -> tuple[str, int]:
    """Start Serve's HTTP proxy on ``host:port``; returns where it listens. A Serve instance that
    already runs on the cluster keeps its own address (Serve ignores new HTTP options): that is
    said, and its address returned, so the caller points users at the right URL. A new instance's
    controller warns of slow replica starts at ``REPLICA_STARTUP_WARNING_S``."""
    from ray.serve.context import _get_global_client

    serve.start(http_options={"host": host, "port": port}, controller_options=CONTROLLER_OPTIONS)
    actual = _get_global_client().http_config
    if (actual.host, actual.port) != (host, port):
        logger.warning("Serve already runs on this Ray cluster with its HTTP proxy on %s:%d, which it keeps: "
                       "--host %s --port %d apply only to a new Serve instance (`serve shutdown -y` first to move it)",
                       actual.host, actual.port, host, port)
    return actual.host, actual.port
