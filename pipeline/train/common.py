"""What both training jobs share: configuration, the Ray Train wiring, checkpoints, logging.

Ray Train 2.60 (Train V2): a re-submitted job with the same ``name`` and ``output`` (storage path)
resumes from its latest checkpoint via ``ray.train.get_checkpoint()``; ``FailureConfig`` restarts
the workers after a failure, again from the latest checkpoint. Checkpoints are written by rank 0
into a fresh local folder and handed to ``ray.train.report``, which uploads them and only then
registers them, so a crash mid-upload never leaves a checkpoint that would be picked up.
MLflow: the driver opens (or, on resume, reopens) the run; world rank 0 logs into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from pipeline.cli import option
from pipeline.logs import configure_logging
from pipeline.tracking import log_shards_input, tracking_uri
from pipeline.data.datasets import DATA_CPUS_PER_DATASET, default_decoders

logger = logging.getLogger(__name__)
TRAINING_STATE = "training_state.pt"
OPTIMIZER_SHARD = "optimizer_shard_{rank}.pt"  # zero1: each rank's part of the optimizer state
EMA_SHARD = "ema_shard_{rank}.pt"  # each rank's part of the weights' moving average (models.generator.ema)
FINAL_MODEL = "final_model"
OPTIMIZERS = ("adamw", "zero1")
MIN_WORKER_CPUS = 0.1


@dataclass
class TrainConfig:
    """Flags shared by ``jobs/finetune.py`` and ``jobs/train_recon.py`` (``pipeline.cli``)."""

    model: str = option(help="diffusers directory of G (ModelScope T2V / I2VGen-XL layout, or fine-tuned)")
    output: str = option(help="storage path for checkpoints and the final model (folder or URI)")
    name: str = option(help="run name: re-submitting with the same name and output resumes")
    data: str | None = option(None, "orbit shards from jobs/render.py (folder or URI)")
    latents: str | None = option(
        None, "latent shards from jobs/encode.py: fine-tune G from them instead of --data's orbits, with the VAE and "
        "text encoder off the GPU (text model only)")
    steps: int = option(1000, "optimizer steps")
    num_workers: int = option(1, "Ray Train workers")
    cpus_per_worker: float | None = option(
        None, "CPUs reserved per worker (default: 1, or less where the cluster's CPUs would leave Ray Data's read "
        "and decode tasks none)")
    wait_for_nodes: bool = option(
        False, "an autoscaling cluster: wait for the nodes the workers need instead of failing at once when the "
        "cluster cannot place them now")
    use_gpu: bool = option(False, "one GPU per worker")
    accelerator_type: str | None = option(None, "e.g. A100 (Ray's accelerator_type)")
    resources_per_worker: dict[str, float] = option(
        {}, "custom Ray resources per worker, e.g. trainer=1 (places workers on the nodes that advertise them)")
    micro_batch: int = option(1, "samples per worker per forward")
    optimizer: str = option("adamw", "adamw; or zero1: AdamW with its state sharded over the workers "
                            "(ZeroRedundancyOptimizer: 1/N of the 8 bytes per parameter; docs/costs.md)",
                            choices=OPTIMIZERS)
    global_batch: int = option(32, "samples per optimizer step over all workers, by gradient accumulation")
    lr: float = option(3e-5, "AdamW learning rate")
    lr_schedule: str = option("constant", "constant, or cosine: anneal to 5%% of --lr over --steps",
                              choices=("constant", "cosine"))
    precision: str = option("fp16", "autocast precision; fp16 uses a grad scaler on CUDA, CPUs use bf16 for it",
                             choices=("fp16", "bf16", "no"))
    gradient_checkpointing: bool = option(True, "recompute block activations in the backward pass (less memory)")
    checkpoint_every: int = option(500, "steps between checkpoints")
    log_every: int = option(10, "steps between progress lines/metrics")
    sample_every: int = option(0, "steps between sampled-view grids in MLflow (0: off)")
    sample_steps: int = option(25, "DDIM steps of those samples")
    resolution: int = option(256, "training image size")
    captions: str | None = option(None, "CSV uid or file name,caption overriding the shards' captions")
    image_data: str | None = option(
        None, "optional Parquet of 2D images (columns image, caption) mixed in as 1-frame videos")
    image_ratio: float = option(0.0, "share of micro-batches taken from --image-data")
    roll_orbits: bool = option(
        False, "start each training orbit at a random view (views and cameras together), so only the cameras "
        "tell which view a frame is (docs/results.md: camera control)")
    reverse_orbits: bool = option(False, "run half the training orbits backwards (views and cameras together)")
    # G's objective (jobs/finetune.py); None takes the authors' choice for the model's variant (models.generator.objective.RECIPES).
    condition_dropout: float | None = option(
        None, "share of samples trained unconditioned, for classifier-free guidance (default: 0.1 text, 0 image)")
    negative_prompt: str | None = option(
        None, "the text dropped samples get and guidance guides against, recorded in the model (default: the "
        "authors' negative prompt, models.prompts; '' for the empty prompt)")
    offset_noise: float | None = option(None, "offset-noise strength (default: 0 text, 0.1 image)")
    ema_decay: float | None = option(
        None, "keep an EMA of the weights with this decay, saved beside them as ema/ (default: none for text, "
        "0.9999 for image; 0: none)")
    max_decoders: int | None = option(
        None, "decode actors the data pool may scale up to, per dataset (default: the CPUs the workers leave, "
        "in 0.5-CPU shares)")
    shuffle_buffer: int = option(
        16, "rows shuffled in each worker's local buffer, every epoch in another order (seeded by --seed); the "
        "shards' file order is shuffled every epoch too; 0: neither, the shards' order")
    materialize_data: bool = option(
        False, "decode the shards once and keep the arrays in Ray's object store (data that fits in memory): "
        "otherwise every epoch decodes again, which dominates when an epoch is a few steps")
    max_failures: int = option(2, "worker failures survived")
    keep_checkpoints: int = option(2, "checkpoints kept")
    mlflow_uri: str | None = option(None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    experiment: str = option("videomv-finetune", "MLflow experiment")
    register_as: str | None = option(None, "register the final model in the MLflow model registry under this name "
                                           "(then load it as models:/NAME/latest)")
    seed: int = option(0, "seed of weights' noise, data order and condition dropout")
    fail_at_step: int | None = option(None, "fault drill: raise once at this step to exercise recovery")

    def __post_init__(self) -> None:
        if (self.data is None) == (self.latents is None):
            raise ValueError("give the training data: --data (orbit shards) or --latents (latent shards), one of them")
        if self.precision not in ("fp16", "bf16", "no"):
            raise ValueError(f"precision must be fp16, bf16 or no, got {self.precision!r}")
        if self.steps < 1 or self.micro_batch < 1 or self.global_batch < 1:
            raise ValueError("steps, micro_batch and global_batch must be positive")
        if not 0.0 <= self.image_ratio < 1.0:
            raise ValueError("image_ratio must be in [0, 1)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be positive, got {self.cpus_per_worker}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be 0 or more, got {self.shuffle_buffer}")
        if self.max_decoders is not None and self.max_decoders < 1:
            raise ValueError(f"max_decoders must be at least 1, got {self.max_decoders}")
        if self.condition_dropout is not None and not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.offset_noise is not None and self.offset_noise < 0:
            raise ValueError(f"offset_noise must be 0 or more, got {self.offset_noise}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per optimizer step so that micro_batch x workers x steps = global_batch."""
        return max(1, self.global_batch // (self.micro_batch * self.num_workers))


def mlflow_run_id(config: TrainConfig, params: dict[str, Any]) -> str:
    """The run for ``config.name``: reopened when the job is resumed, otherwise created."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config.mlflow_uri))
    experiment = mlflow.set_experiment(config.experiment)
    existing = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.ray_run_name = '{config.name}'",
                                  output_format="list")
    if existing:
        return existing[0].info.run_id
    with mlflow.start_run(run_name=config.name, tags={"ray_run_name": config.name}) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        log_shards_input(config.data or config.latents, context="training")
        return run.info.run_id


def worker_cpus(config: TrainConfig, cluster: dict[str, float], num_datasets: int) -> float:
    """CPUs to reserve per worker, checked against the cluster's resources now.

    Ray Data needs at least one read task and one decode actor per dataset beside the workers
    (``DATA_CPUS_PER_DATASET``): workers that take every CPU leave it none, and the job would wait
    forever. ``cpus_per_worker`` None gives each worker 1 CPU, or what is left after Ray Data's
    share. A cluster that cannot place the job now is an error naming what to change, unless
    ``wait_for_nodes`` (an autoscaling cluster) turns it into a warning.
    """
    data_cpus = DATA_CPUS_PER_DATASET * num_datasets
    total_cpus, total_gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    per_worker = config.cpus_per_worker
    if per_worker is None:
        left = (total_cpus - data_cpus) / config.num_workers
        per_worker = 1.0 if config.wait_for_nodes or left >= 1.0 else round(max(left, MIN_WORKER_CPUS), 3)
    problems = []
    if per_worker * config.num_workers + data_cpus > total_cpus + 1e-9:
        problems.append(
            f"{config.num_workers} workers x {per_worker:g} CPUs leave {total_cpus - per_worker * config.num_workers:g} "
            f"of the cluster's {total_cpus:g} CPUs to Ray Data, which needs {data_cpus:g} to read and decode "
            f"{num_datasets} dataset(s): lower --cpus-per-worker or --num-workers, or add CPUs")
    if config.use_gpu and total_gpus < config.num_workers:
        problems.append(f"{config.num_workers} GPU workers on a cluster with {total_gpus:g} GPUs: lower --num-workers")
    if problems:
        message = "; ".join(problems)
        if not config.wait_for_nodes:
            raise ValueError(f"the training job cannot be placed: {message} (on an autoscaling cluster, "
                             "--wait-for-nodes waits for the nodes instead)")
        logger.warning("the cluster cannot place the training job now (%s): waiting for the autoscaler", message)
    return per_worker


def placed(config: TrainConfig, num_datasets: int) -> TrainConfig:
    """``config`` with ``cpus_per_worker`` and ``max_decoders`` resolved against the Ray cluster
    (``worker_cpus``, ``default_decoders``); raises when the cluster cannot place the job."""
    cluster = ray.cluster_resources()
    cpus = worker_cpus(config, cluster, num_datasets)
    decoders = config.max_decoders or default_decoders(cluster.get("CPU", 0.0), cpus * config.num_workers)
    logger.info("%d worker(s) with %g CPUs each; up to %d decode actor(s) per dataset", config.num_workers, cpus,
                decoders)
    return dataclasses.replace(config, cpus_per_worker=cpus, max_decoders=decoders)


def run_trainer(train_loop: Callable[[dict], None], config: TrainConfig, datasets: dict[str, Any],
                loop_config: dict[str, Any]) -> ray.train.Result:
    """Build and fit the ``TorchTrainer`` for ``config`` (resolved by ``placed``); returns Ray Train's result."""
    params = dataclasses.asdict(config)
    run_id = mlflow_run_id(config, params)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={**params, **loop_config, "mlflow_run_id": run_id,
                           "mlflow_tracking_uri": tracking_uri(config.mlflow_uri)},
        scaling_config=ray.train.ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                               accelerator_type=config.accelerator_type,
                                               resources_per_worker={"CPU": config.cpus_per_worker,
                                                                     **config.resources_per_worker}),
        run_config=ray.train.RunConfig(
            name=config.name,
            storage_path=config.output,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
        ),
        datasets=datasets,
    )
    return trainer.fit()


# -- inside the workers ----------------------------------------------------------------------------
class WorkerState:
    """Rank, device, precision and logging helpers for one training worker."""

    def __init__(self, config: dict[str, Any]) -> None:
        configure_logging()  # this runs in a Ray Train worker process
        context = ray.train.get_context()
        self.config = config
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.is_chief = self.rank == 0
        cuda = self.device.type == "cuda"
        precision = config["precision"]
        # fp16 autocast only on CUDA; CPUs fall back to bf16 (fp16 GEMMs are slow or missing there).
        self.autocast_dtype = {"fp16": torch.float16 if cuda else torch.bfloat16, "bf16": torch.bfloat16,
                               "no": None}[precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16" and cuda)
        self.worker_nodes, self.worker_hosts = self._gather_placement()
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

    @contextlib.contextmanager
    def mlflow(self) -> Iterator[Any]:
        """The job's MLflow run on rank 0 (None elsewhere)."""
        if not self.is_chief:
            yield None
            return
        import mlflow

        mlflow.set_tracking_uri(self.config["mlflow_tracking_uri"])
        with mlflow.start_run(run_id=self.config["mlflow_run_id"]):
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
        eta = elapsed / max(done, 1) * (self.config["steps"] - step)
        logger.info("step %d/%d loss %.4f %.2f samples/s eta %.1f min", step, self.config["steps"], metrics["loss"],
                    metrics.get("samples_per_second", 0.0), eta / 60)
        if self._mlflow is not None:
            self._mlflow.log_metrics(metrics, step=step)

    def end_step(self, step: int, optimizer: torch.optim.Optimizer, losses: list[float], samples: int,
                 began: float, save_model: Callable[[str], None], ema: Any = None) -> dict[str, float]:
        """Optimizer step (through the grad scaler), the EMA's step, metrics, progress, and the
        report/checkpoint schedule (every worker calls this with the same steps, as ``report`` is a
        barrier)."""
        if self.config.get("lr_schedule") == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(self.config["lr"], step, self.config["steps"])
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        seconds = time.perf_counter() - began
        metrics = {"loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
                   "samples_per_second": samples * self.world_size / seconds, "step_time": seconds,
                   "memory_gb": self.memory_gb()}
        last = step == self.config["steps"]
        log_now = step % self.config["log_every"] == 0
        if log_now or last:
            self.progress(step, metrics)
        checkpoint_now = step % self.config["checkpoint_every"] == 0 or last
        if checkpoint_now or log_now:
            report(self, step, metrics, save_model if checkpoint_now else None, optimizer, ema)
        return metrics

    def maybe_fail(self, step: int) -> None:
        """Fault drill: raise once at ``fail_at_step`` (a marker in the run's storage records it)."""
        target = self.config.get("fail_at_step")
        if target is None or step != target or not self.is_chief:
            return
        marker = os.path.join(self.config["output"], self.config["name"], f".failed_once_at_{target}")
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


def build_optimizer(parameters: Any, config: dict[str, Any], world_size: int) -> torch.optim.Optimizer:
    """AdamW without weight decay (the authors' recipe); with ``optimizer`` "zero1" and several
    workers, its state sharded over the ranks (``ZeroRedundancyOptimizer``: each rank keeps and
    updates 1/N of the moments, then broadcasts its parameters). Fused: one kernel and no
    temporaries, where the default multi-tensor step allocates up to a copy of the parameters
    (5.7 GB for the full-size UNet: ``benchmarks/diffusion_memory.py``)."""
    if config.get("optimizer", "adamw") == "zero1" and world_size > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(list(parameters), optimizer_class=torch.optim.AdamW, lr=config["lr"],
                                       weight_decay=0.0, fused=True)
    return torch.optim.AdamW(parameters, lr=config["lr"], weight_decay=0.0, fused=True)


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
    directory = tempfile.mkdtemp(prefix="videomv-checkpoint-")  # Ray deletes it after the upload
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
    ray.train.report({**metrics, "step": step}, checkpoint=ray.train.Checkpoint.from_directory(directory),
                     checkpoint_dir_name=f"checkpoint_{step:07d}",
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC)


def cycle_batches(shard: Any, batch_size: int, name: str, shuffle_buffer: int = 0, seed: int = 0) -> Iterator[dict]:
    """Endless numpy batches from a Ray Data shard, epoch after epoch; with ``shuffle_buffer`` rows
    shuffled in a local buffer of that many rows, seeded by ``seed`` and the epoch (every epoch in
    another order, the same orders for the same seed)."""
    epoch = 0
    while True:
        produced = False
        shuffle = ({"local_shuffle_buffer_size": shuffle_buffer, "local_shuffle_seed": seed * 100_003 + epoch}
                   if shuffle_buffer else {})
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True, **shuffle):
            produced = True
            yield batch
        if not produced:
            raise RuntimeError(f"the {name} dataset gave this worker no batch of {batch_size}: too little data")
        epoch += 1


def publish_final(save: Callable[[str], None], config: dict[str, Any], mlflow: Any) -> str:
    """Rank 0 at the end: write the model with ``save`` to ``{output}/{name}/final_model`` (replaced
    atomically on local storage) and record it in MLflow, uploading it once.

    Local output: the model is also logged as the run's artifact path "final_model" (one upload,
    to MLflow's store). Remote output (``s3://``...): the model is uploaded there only, and the
    run's tag ``final_model`` (and a registered version's source) points at it, instead of a
    second copy of many GB in MLflow's artifact store."""
    target = os.path.join(config["output"], config["name"], FINAL_MODEL)
    remote_output = "://" in config["output"]
    with tempfile.TemporaryDirectory(prefix="videomv-final-") as directory:
        save(directory)
        if remote_output:
            import fsspec

            filesystem, remote = fsspec.core.url_to_fs(target)
            filesystem.put(directory + "/", remote + "/", recursive=True)
        else:
            staging = target + ".partial"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(directory, staging)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        if mlflow is not None:
            if not remote_output:
                mlflow.log_artifacts(directory, artifact_path=FINAL_MODEL)
            mlflow.set_tag("final_model", target)
            if config.get("register_as"):
                register_final(mlflow, config["register_as"], source=target if remote_output else None)
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


@dataclass
class TrainSummary:
    name: str
    steps: int
    final_metrics: dict[str, Any]
    checkpoint: str | None
    final_model: str


def summarise(result: ray.train.Result, config: TrainConfig) -> TrainSummary:
    if result.error:
        raise result.error
    return TrainSummary(config.name, config.steps, dict(result.metrics or {}),
                        result.checkpoint.path if result.checkpoint else None,
                        os.path.join(config.output, config.name, FINAL_MODEL))
