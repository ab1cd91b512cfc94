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
import os
import warnings
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray import serve

from models.precision import DTYPE_CHOICES
from pipeline.cli import config_from_strings, option
from pipeline.serve.api import MAX_BODY_BYTES
from pipeline.serve.ingress import BODY_TIMEOUT_S, LOOPBACK_HOSTS, build_ingress

logger = logging.getLogger(__name__)
GPU_BATCH_SIZE = 4  # requests batched on a GPU replica by default
DEPLOYMENT_NAME = "VideoMV"  # the model deployment, as ``serve status`` lists it


@dataclass
class ServeConfig:
    """The Serve application's arguments: ``serve run pipeline.serve.app:app model_dir=DIR [key=value ...]``,
    ``serve_config.yaml``'s ``args``, or the flags of ``python jobs/serve.py`` (``pipeline.cli``)."""

    model_dir: str = option(help="the multi-view model (fine-tuned): a directory, fsspec URI (s3://...) or MLflow "
                                 "model URI (models:/name/latest, runs:/id/final_model)")
    reconstructor: str | None = option(
        None, "the reconstructor: LGM directory or official .safetensors, at any such location (3D-aware sampling, "
        "PLY); default: the model directory's reconstructor/, if any", deprecated_alias="lgm")
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
    body_timeout_s: float = option(BODY_TIMEOUT_S, "seconds a request body may take to arrive before 408")
    allowed_hosts: tuple[str, ...] = option(
        LOOPBACK_HOSTS, "Host names answered (others get 421: a page on another name resolving here, DNS "
        "rebinding, cannot read the answers); behind a proxy give its public name, or * for any")
    allowed_origins: tuple[str, ...] = option(
        (), "origins of other sites' pages allowed to POST (e.g. https://app.example.com); the app's own "
        "page always may, other browser pages get 403")
    dtype: str = option("auto", "weights' precision on the replica (auto: fp16 on a GPU, fp32 on a CPU)",
                        choices=DTYPE_CHOICES)
    use_ema: bool = option(False, "serve G's moving-average weights (ema/, from fine-tuning with --ema-decay)")
    rembg_model: str | None = option(None, "a local rembg ONNX model (u2net, isnet, birefnet) that removes the "
                                           "backgrounds of uploaded images without an alpha channel; without it "
                                           "such an image needs a plain background (else 422)")
    mesh_max_faces: int | None = option(None, "triangles of the 'glb' mesh at most (decimated; 0: all; default "
                                              "models.mesh.fusion.MeshOptions', 20,000, what web viewers handle)")

    def resolved(self, cluster_has_gpus: bool) -> "ServeConfig":
        """num_gpus and max_batch_size filled in for the cluster: a GPU replica batches (a batch
        fills the device), a CPU replica does not (a batch of 4 takes 4 times as long there, so
        batching only adds latency; measured in docs/costs.md)."""
        if self.rembg_model is not None and not os.path.isfile(self.rembg_model):
            raise ValueError(f"rembg_model: no such file {self.rembg_model!r} (a local rembg ONNX model)")
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
                                             config.allowed_origins, config.body_timeout_s, config.rembg_model),
                               name="Ingress",
                               max_ongoing_requests=64)
    return ingress.bind(model.bind(config.model_dir, config.reconstructor, config.max_batch_size, config.mlflow_uri,
                                   config.dtype, config.use_ema, config.mesh_max_faces))


def app(args: dict[str, str]) -> Any:
    """The application builder of ``serve_config.yaml`` and ``serve run pipeline.serve.app:app
    model_dir=DIR [key=value ...]``: ``args`` are ``ServeConfig``'s fields as strings. An installed
    module (not a file of the working dir), so the Serve controller imports it on any node where
    the project is installed, with no ``runtime_env``."""
    return build_app(**dataclasses.asdict(config_from_strings(ServeConfig, args)))
