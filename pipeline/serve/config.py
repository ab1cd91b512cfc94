"""The Serve application's arguments (``ServeConfig``) and the limits they default to: a module
without the model or web libraries, so ``jobs/serve.py --help`` is quick."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from models.precision import DTYPE_CHOICES
from pipeline.cli import check_minimums, option

logger = logging.getLogger(__name__)
GPU_BATCH_SIZE = 4  # requests batched on a GPU replica by default
MAX_BODY_BYTES = 10 * 1024 * 1024
BODY_TIMEOUT_S = 30.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Serve's controller allows start-up times fit for a quiet machine: it warns of a replica still
# starting after 30 s, and kills an HTTP proxy not yet listening after 5 s (to start another, which
# takes as long: on two busy CPU cores `serve.start` then fails, its proxy dead). Our replicas load
# the model and render once before they answer (gsplat compiles its CUDA kernels then: minutes on a
# first start), and a busy machine's process imports alone outlast both. The Serve controllers we
# start wait these instead (the proxy's: what `serve.start` itself waits for it, 60 s);
# serve_config.yaml's controller_options carry the same values (tests/test_serve.py checks).
REPLICA_STARTUP_WARNING_S = 600
PROXY_READY_TIMEOUT_S = 60
CONTROLLER_OPTIONS = {"runtime_env": {"env_vars": {
    "RAY_SERVE_SLOW_STARTUP_WARNING_S": str(REPLICA_STARTUP_WARNING_S),
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": str(PROXY_READY_TIMEOUT_S),
}}}


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
                                          "else 0)", minimum=0.0)
    max_replicas: int = option(1, "model replicas the autoscaler may start", minimum=1)
    timeout_s: float = option(300.0, "seconds a generation may work (from when it starts, not its time in the "
                                     "queue) before it stops and its request gets 504", exclusive_minimum=0.0)
    max_queued: int | None = option(None, "generations the ingress holds at once, waiting or running; one more gets "
                                          "503 with Retry-After at once (default: 4 x max_batch_size x max_replicas)",
                                    minimum=1)
    max_batch_size: int | None = option(None, "compatible requests batched into one sampler call (1: no batching; "
                                              f"default: {GPU_BATCH_SIZE} on GPU replicas, 1 on CPU ones, where "
                                              "batching gains nothing: docs/costs.md)", minimum=1)
    max_body_bytes: int = option(MAX_BODY_BYTES, "request bodies larger than this get 413", minimum=1)
    body_timeout_s: float = option(BODY_TIMEOUT_S, "seconds a request body may take to arrive before 408",
                                   exclusive_minimum=0.0)
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
                                              "models.mesh.fusion.MeshOptions', 20,000, what web viewers handle)",
                                        minimum=0)

    def __post_init__(self) -> None:
        check_minimums(self)

    def resolved(self, cluster_has_gpus: bool) -> "ServeConfig":
        """num_gpus and max_batch_size filled in for the cluster: a GPU replica batches (a batch
        fills the device), a CPU replica does not (a batch of 4 takes 4 times as long there, so
        batching only adds latency; measured in docs/costs.md)."""
        if self.rembg_model is not None:
            from models.pipeline_videomv.image_input import check_background_model  # the model code: lazily

            check_background_model(self.rembg_model)
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {self.dtype!r}")
        if self.num_gpus is None and not cluster_has_gpus:
            # An autoscaling cluster whose GPU nodes are at zero looks CPU-only: say what was chosen.
            logger.warning("the Ray cluster has no GPUs now, so the model replica is a CPU one (num_gpus=0); "
                           "on an autoscaling cluster set num_gpus=1 to have a GPU node started for it")
        gpus = self.num_gpus if self.num_gpus is not None else (1.0 if cluster_has_gpus else 0.0)
        # Given values were bounded when the config was made (check_minimums), so these are at least 1.
        batch = self.max_batch_size if self.max_batch_size is not None else (GPU_BATCH_SIZE if gpus > 0 else 1)
        queued = self.max_queued if self.max_queued is not None else 4 * batch * self.max_replicas
        return dataclasses.replace(self, num_gpus=gpus, max_batch_size=batch, max_queued=queued)
