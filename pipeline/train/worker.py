"""The worker side of both training jobs: what runs in every Ray Train worker process (rank, device,
precision, the optimizer, checkpoints, resuming, the data iterators, publishing the final model).

Checkpoints are written by rank 0 into a fresh local folder and handed to ``ray.train.report``,
which uploads them and only then registers them, so a crash mid-upload never leaves a checkpoint
that would be picked up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from typing import Any, Callable, Iterator

import ray
import ray.train
import ray.train.torch
import torch

from models.precision import common_autocast, training_autocast
from pipeline.disk import atomic_directory, require_free_space
from pipeline.logs import configure_logging
from pipeline.train.config import (EMA_SHARD, FINAL_MODEL, FINAL_MODEL_STEP_TAG, OPTIMIZER_SHARD, TRAINING_STATE,
                                   TrainConfig, WorkerConfig)

logger = logging.getLogger(__name__)


class WorkerState:
    """Rank, device, precision and logging helpers for one training worker."""

    def __init__(self, config: WorkerConfig) -> None:
        configure_logging()  # this runs in a Ray Train worker process
        context = ray.train.get_context()
        self.config = config
        self.train = config.train
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.is_chief = self.rank == 0
        self.worker_nodes, self.worker_hosts = self._gather_placement()
        precision = config.train.precision
        self.autocast_dtype = self._agreed_autocast(precision)
        if precision == "fp16" and self.autocast_dtype != torch.float16 and self.is_chief:
            logger.info("precision fp16 on a CPU: autocast in %s", "bf16" if self.autocast_dtype else
                        "fp32 (a worker's CPU has no bf16 instructions: bf16 would be several times slower there)")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self._mlflow = None
        self._start = time.perf_counter()
        self._first_step: int | None = None

    def _gather_placement(self) -> tuple[list[str], list[str]]:
        """(Ray node id, host name) of every worker, by rank (a collective: all workers call it)."""
        mine = (ray.get_runtime_context().get_node_id(), socket.gethostname())
        placement = [mine]
        if self.world_size > 1 and torch.distributed.is_initialized():
            placement = [None] * self.world_size
            torch.distributed.all_gather_object(placement, mine)
        return [node for node, _ in placement], [host for _, host in placement]

    def _agreed_autocast(self, precision: str) -> torch.dtype | None:
        """``training_autocast`` for this worker's device, the same on every rank (a collective: on
        CPUs of two kinds fp32 everywhere, ``common_autocast``)."""
        mine = training_autocast(precision, self.device)
        if self.world_size == 1 or not torch.distributed.is_initialized():
            return mine
        choices: list[torch.dtype | None] = [None] * self.world_size
        torch.distributed.all_gather_object(choices, mine)
        return common_autocast(choices)

    @contextlib.contextmanager
    def mlflow(self) -> Iterator[Any]:
        """The job's MLflow run on rank 0 (None elsewhere)."""
        if not self.is_chief:
            yield None
            return
        import mlflow

        mlflow.set_tracking_uri(self.config.mlflow_tracking_uri)
        with mlflow.start_run(run_id=self.config.mlflow_run_id):
            self._mlflow = mlflow
            # Tags, not params: a restarted worker group may land on other nodes.
            mlflow.set_tags({"worker_nodes": ",".join(self.worker_nodes), "worker_hosts": ",".join(self.worker_hosts)})
            try:
                yield mlflow
            finally:
                self._mlflow = None

    def progress(self, step: int, metrics: dict[str, float]) -> None:
        """Rank 0: log step, loss, throughput and ETA; log the metrics to MLflow."""
        if not self.is_chief:
            return
        if self._first_step is None:
            self._first_step, self._start = step - 1, time.perf_counter() - metrics.get("step_time", 0.0)
        done = step - self._first_step
        elapsed = time.perf_counter() - self._start
        eta = elapsed / max(done, 1) * (self.train.steps - step)
        logger.info("step %d/%d loss %.4f %.2f samples/s eta %.1f min", step, self.train.steps, metrics["loss"],
                    metrics.get("samples_per_second", 0.0), eta / 60)
        if self._mlflow is not None:
            self._mlflow.log_metrics(metrics, step=step)

    def train_steps(self, start: int, optimizer: torch.optim.Optimizer,
                    micro_step: Callable[[int, int], tuple[torch.Tensor, int]], save_model: Callable[[str], None],
                    network: Any = None, ema: Any = None, after_step: Callable[[int], None] | None = None) -> None:
        """The step loop of both trainers, from step ``start + 1`` to the config's last.

        Each step runs ``accumulation_steps`` micro-steps, ``micro_step(step, micro) -> (loss, samples)``
        (the trainer's forward pass), backpropagates each loss through the grad scaler, then ends the
        step (``end_step``: optimizer, EMA, metrics, reports and checkpoints) and calls
        ``after_step(step)``. ``network`` is the DDP-wrapped model when there is one: its gradients
        are all-reduced on the last micro-step only.
        """
        accumulation = self.train.accumulation_steps(self.world_size)
        if self.is_chief and start:
            logger.info("resumed from step %d", start)
        if network is not None:
            # Autograd may create a gradient in its own layout (on the CPU, a 1x1 convolution's
            # weight gradient has other strides over its size-1 dimensions: the same memory order);
            # DDP then copies it into its bucket, and PyTorch warns once per rank that the strides
            # differ. The values are the same, so the log stays clean of it.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        for step in range(start + 1, self.train.steps + 1):
            began = time.perf_counter()
            self.maybe_fail(step)
            losses, samples = [], 0
            for micro in range(accumulation):
                sync = (contextlib.nullcontext() if network is None or micro == accumulation - 1
                        else network.no_sync())
                with sync:
                    loss, count = micro_step(step, micro)
                    self.scaler.scale(loss / accumulation).backward()
                losses.append(loss.item())
                samples += count
            self.end_step(step, optimizer, losses, samples, began, save_model, ema)
            if after_step is not None:
                after_step(step)

    def end_step(self, step: int, optimizer: torch.optim.Optimizer, losses: list[float], samples: int,
                 began: float, save_model: Callable[[str], None], ema: Any = None) -> dict[str, float]:
        """Optimizer step (through the grad scaler), the EMA's step, metrics, progress, and the
        report/checkpoint schedule (every worker calls this with the same steps, as ``report`` is a
        barrier)."""
        if self.train.lr_schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(self.train.lr, step, self.train.steps)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        seconds = time.perf_counter() - began
        metrics = {"loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
                   "samples_per_second": samples * self.world_size / seconds, "step_time": seconds,
                   "memory_gb": self.memory_gb()}
        last = step == self.train.steps
        log_now = step % self.train.log_every == 0
        if log_now or last:
            self.progress(step, metrics)
        checkpoint_now = step % self.train.checkpoint_every == 0 or last
        if checkpoint_now or log_now:
            report(self, step, metrics, save_model if checkpoint_now else None, optimizer, ema)
        return metrics

    def maybe_fail(self, step: int) -> None:
        """Fault drill: raise once at ``fail_at_step`` (a marker in the run's storage records it)."""
        target = self.train.fail_at_step
        if target is None or step != target or not self.is_chief:
            return
        marker = os.path.join(self.train.output, self.train.name, f".failed_once_at_{target}")
        if os.path.exists(marker):
            return
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        open(marker, "w").close()
        raise RuntimeError(f"fault drill: failing once at step {target}")

    def memory_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def build_optimizer(parameters: Any, lr: float, optimizer: str = "adamw", world_size: int = 1) -> torch.optim.Optimizer:
    """AdamW without weight decay (the authors' recipe); with ``optimizer`` "zero1" and several
    workers, its state sharded over the ranks (``ZeroRedundancyOptimizer``: each rank keeps and
    updates 1/N of the moments, then broadcasts its parameters). Fused: one kernel and no
    temporaries, where the default multi-tensor step allocates up to a copy of the parameters
    (5.7 GB for the full-size UNet: ``benchmarks/diffusion_memory.py``)."""
    if optimizer == "zero1" and world_size > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(list(parameters), optimizer_class=torch.optim.AdamW, lr=lr,
                                       weight_decay=0.0, fused=True)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, fused=True)


def ddp_options(find_unused_parameters: bool = False) -> dict[str, Any]:
    """DistributedDataParallel's options for both trainers: gradients as views into DDP's
    all-reduce buckets, so the buckets add no second copy of the gradients (5.65 GB for the
    full-size UNet in fp32)."""
    return {"find_unused_parameters": find_unused_parameters, "gradient_as_bucket_view": True}


def _sharded(optimizer: torch.optim.Optimizer) -> bool:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return isinstance(optimizer, ZeroRedundancyOptimizer)


def load_training_state(path: str) -> dict[str, Any]:
    """A ``training_state.pt`` (or optimizer shard) read without unpickling code: tensors, numbers,
    strings and containers only, so a checkpoint from a shared bucket cannot run code on the ranks
    that resume from it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError for anything but plain data
        raise ValueError(f"{path} is not a training state this job wrote (it is read with weights_only=True): "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None


def checkpoint_bytes(optimizer: torch.optim.Optimizer, ema: Any = None) -> int:
    """About how much one checkpoint stages on this worker: the trained weights, two optimizer
    moments each (AdamW) and the EMA's copy, in fp32."""
    numel = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    return int(numel * 4 * (3 + (1 if ema is not None else 0)) * 1.1)


def _staging_prefix(worker: "WorkerState") -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", worker.train.name)[:60]
    return f"videomv-checkpoint-{name}-rank{worker.rank}-"


def prepare_checkpoint_space(worker: "WorkerState", optimizer: torch.optim.Optimizer, ema: Any = None) -> None:
    """At the start of every attempt: remove this run's staging copies that an earlier attempt on
    this node left (an upload that failed in the background leaves its copy), then fail at once,
    with one line, when the staging folder has no room for a checkpoint: a restart after a full
    disk stops here in seconds instead of training up to the next checkpoint to fail again."""
    staging = tempfile.gettempdir()
    for name in os.listdir(staging):
        if name.startswith(_staging_prefix(worker)):
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
    require_free_space(staging, checkpoint_bytes(optimizer, ema), "a checkpoint's staging copy")


def restore(load_model: Callable[[str], None], optimizer: torch.optim.Optimizer, scaler: Any,
            rank: int = 0, world_size: int = 1, ema: Any = None) -> int:
    """Load the latest checkpoint if there is one; returns the step it was taken at (0 if none).

    A sharded (zero1) optimizer state, and the EMA's shards, resume only with the same number of
    workers: each rank loads its own shard."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        load_model(directory)
        state = load_training_state(os.path.join(directory, TRAINING_STATE))
        shards = state.get("optimizer_shards")
        if _sharded(optimizer):
            if shards != world_size:
                found = f"{shards} shards" if shards else "an unsharded optimizer state"
                raise ValueError(f"checkpoint {directory} holds {found}; --optimizer zero1 resumes it only with "
                                 f"as many workers as shards (this run has {world_size})")
            optimizer.optim.load_state_dict(
                load_training_state(os.path.join(directory, OPTIMIZER_SHARD.format(rank=rank))))
        else:
            if shards:
                raise ValueError(f"checkpoint {directory} holds an optimizer state sharded over {shards} workers: "
                                 f"resume it with --optimizer zero1 --num-workers {shards}")
            optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            if state.get("ema_shards") is None:
                logger.warning("checkpoint %s has no EMA: the average starts from its weights", directory)
            elif state["ema_shards"] != world_size:
                raise ValueError(f"checkpoint {directory} holds an EMA sharded over {state['ema_shards']} workers; "
                                 f"resume it with --num-workers {state['ema_shards']} (this run has {world_size})")
            else:
                ema.load_state_dict(load_training_state(os.path.join(directory, EMA_SHARD.format(rank=rank))))
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["step"])


def report(worker: WorkerState, step: int, metrics: dict[str, float], save_model: Callable[[str], None] | None,
           optimizer: torch.optim.Optimizer, ema: Any = None) -> None:
    """``ray.train.report`` on every worker (it is a barrier); with ``save_model``, a checkpoint:
    rank 0 writes the model and the training state, and with a sharded optimizer or an EMA every
    rank adds its shard (Ray merges the workers' folders). Uploads run in the background
    (``CheckpointUploadMode.ASYNC``): the ranks train on while a checkpoint of many GB is copied, and
    Ray registers it only once it is complete."""
    sharded = _sharded(optimizer)
    if save_model is None or not (worker.is_chief or sharded or ema is not None):
        ray.train.report({**metrics, "step": step})
        return
    require_free_space(tempfile.gettempdir(), checkpoint_bytes(optimizer, ema), "a checkpoint's staging copy")
    directory = tempfile.mkdtemp(prefix=_staging_prefix(worker))  # Ray deletes it after the upload
    try:
        if worker.is_chief:
            save_model(directory)
            state = {"step": step, "scaler": worker.scaler.state_dict()}
            state.update({"optimizer_shards": worker.world_size} if sharded else {"optimizer": optimizer.state_dict()})
            if ema is not None:
                state["ema_shards"] = worker.world_size
            torch.save(state, os.path.join(directory, TRAINING_STATE))
        if sharded:
            torch.save(optimizer.optim.state_dict(), os.path.join(directory, OPTIMIZER_SHARD.format(rank=worker.rank)))
        if ema is not None:
            torch.save(ema.state_dict(), os.path.join(directory, EMA_SHARD.format(rank=worker.rank)))
    except BaseException:  # a full disk mid-write: no truncated staging copy stays behind
        shutil.rmtree(directory, ignore_errors=True)
        raise
    ray.train.report({**metrics, "step": step}, checkpoint=ray.train.Checkpoint.from_directory(directory),
                     checkpoint_dir_name=f"checkpoint_{step:07d}",
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC)


def cycle_batches(shard: Any, batch_size: int, name: str, shuffle_buffer: int = 0, seed: int = 0) -> Iterator[dict]:
    """Endless numpy batches from a Ray Data shard, read after read (a read is one or more passes
    over the data: ``pipeline.data.datasets.plan_reads``); with ``shuffle_buffer`` rows shuffled in
    a local buffer of that many rows, seeded by ``seed`` and the read (every read in another order,
    the same orders for the same seed)."""
    read = 0
    while True:
        produced = False
        shuffle = ({"local_shuffle_buffer_size": shuffle_buffer, "local_shuffle_seed": seed * 100_003 + read}
                   if shuffle_buffer else {})
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True, **shuffle):
            produced = True
            yield batch
        if not produced:
            raise RuntimeError(f"the {name} dataset gave this worker no batch of {batch_size}: too little data")
        read += 1


def publish_final(save: Callable[[str], None], config: TrainConfig, mlflow: Any) -> str:
    """Rank 0 at the end: write the model with ``save`` to ``{output}/{name}/final_model`` (replaced
    atomically on local storage) and record it in MLflow, uploading it once.

    Local output: the model is also logged as the run's artifact path "final_model" (one upload,
    to MLflow's store). Remote output (``s3://``...): the model is uploaded there only, and the
    run's tag ``final_model`` (and a registered version's source) points at it, instead of a
    second copy of many GB in MLflow's artifact store. (A job submitted again after it published
    its final model starts no workers: ``pipeline.train.driver.already_published``.)"""
    target = os.path.join(config.output, config.name, FINAL_MODEL)
    remote_output = "://" in config.output
    with tempfile.TemporaryDirectory(prefix="videomv-final-") as directory:
        save(directory)
        if remote_output:
            import fsspec

            filesystem, remote = fsspec.core.url_to_fs(target)
            filesystem.put(directory + "/", remote + "/", recursive=True)
        else:
            with atomic_directory(target) as staging:  # a full disk leaves the previous model whole
                shutil.copytree(directory, staging, dirs_exist_ok=True)
        if mlflow is not None:
            if not remote_output:
                mlflow.log_artifacts(directory, artifact_path=FINAL_MODEL)
            mlflow.set_tag("final_model", target)
            if config.register_as:
                register_final(mlflow, config.register_as, source=target if remote_output else None)
            mlflow.set_tag(FINAL_MODEL_STEP_TAG, str(config.steps))
    logger.info("final model written to %s", target)
    return target


def register_final(mlflow: Any, name: str, source: str | None = None) -> str:
    """A new version of registered model ``name`` whose source is ``source`` (default: the active
    run's "final_model" artifacts; a diffusers or LGM directory, not an MLflow flavour, so the
    version is created from the location); tags the run with its ``models:/name/version`` URI and
    returns it."""
    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=source or mlflow.get_artifact_uri(FINAL_MODEL), run_id=run_id)
    uri = f"models:/{name}/{version.version}"
    mlflow.set_tag("registered_model", uri)
    logger.info("final model registered as %s", uri)
    return uri


def cosine_lr(base: float, step: int, steps: int, floor: float = 0.05) -> float:
    """Learning rate of step ``step`` (1-based) of ``steps`` on a cosine from ``base`` down to
    ``floor * base`` (torch's ``CosineAnnealingLR`` in closed form; step-based, so a resumed run
    continues on the same curve)."""
    progress = (step - 1) / max(1, steps - 1)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
