"""The driver side of both training jobs: placing the workers on the Ray cluster, opening the MLflow
run, building and fitting the ``TorchTrainer``, and summarising its result.

Ray Train 2.60 (Train V2): a re-submitted job with the same ``name`` and ``output`` (storage path)
resumes from its latest checkpoint via ``ray.train.get_checkpoint()`` (one that already published
its final model of ``steps`` starts no workers: ``already_published``); ``FailureConfig`` restarts
the workers after a failure, again from the latest checkpoint (``pipeline.train.worker``).
MLflow: the driver opens (or, on resume, reopens) the run; world rank 0 logs into it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import ray
import ray.train
from ray.train.torch import TorchTrainer

from pipeline.data.datasets import DATA_CPUS_PER_DATASET, default_decoders
from pipeline.submission import absolute_locations
from pipeline.tracking import experiment_id, log_shards_input, tracking_uri
from pipeline.train.config import FINAL_MODEL, FINAL_MODEL_STEP_TAG, TrainConfig, WorkerConfig

logger = logging.getLogger(__name__)
MIN_WORKER_CPUS = 0.1


def mlflow_run_id(config: TrainConfig, params: dict[str, Any]) -> str:
    """The run for ``config.name``, RUNNING: reopened when the job is resumed, otherwise created.
    ``run_trainer`` ends it FINISHED, or FAILED (KILLED on an interrupt) when training fails."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config.mlflow_uri))
    experiment = mlflow.set_experiment(
        experiment_id=experiment_id(mlflow.MlflowClient(), config.experiment, config.mlflow_artifacts))
    existing = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.ray_run_name = '{config.name}'",
                                  output_format="list")
    if existing:
        run_id = existing[0].info.run_id
    else:
        with mlflow.start_run(run_name=config.name, tags={"ray_run_name": config.name}) as run:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            log_shards_input(config.data or config.latents, context="training")
            run_id = run.info.run_id
    # The fluent block above ended it FINISHED; it is not finished until the workers are.
    mlflow.MlflowClient().update_run(run_id, status="RUNNING")
    return run_id


def already_published(config: TrainConfig, run_id: str) -> ray.train.Result | None:
    """The result of run ``config.name`` (its latest checkpoint and metrics, read from its storage)
    when the run already published its final model of ``config.steps`` steps, and registered it if
    ``register_as`` asks: a job submitted again unchanged, which has nothing to train (its workers
    would load the model, restore the last checkpoint and find so). None otherwise."""
    import fsspec
    from mlflow import MlflowClient

    tags = MlflowClient(tracking_uri(config.mlflow_uri)).get_run(run_id).data.tags
    if tags.get(FINAL_MODEL_STEP_TAG) != str(config.steps):
        return None
    if config.register_as and not tags.get("registered_model", "").startswith(f"models:/{config.register_as}/"):
        return None
    run_dir = os.path.join(config.output, config.name)
    filesystem, path = fsspec.core.url_to_fs(os.path.join(run_dir, FINAL_MODEL))
    if not filesystem.exists(path):
        return None
    try:
        result = ray.train.Result.from_path(run_dir)
    except RuntimeError as error:  # Ray Train's own records of the run are gone: train again
        logger.warning("%s: the final model of step %d is published, but Ray Train's records of the run are not "
                       "readable (%s): training again", config.name, config.steps, error)
        return None
    logger.info("%s: the final model of step %d is already published at %s%s: nothing to train", config.name,
                config.steps, os.path.join(run_dir, FINAL_MODEL),
                f" (registered as {tags['registered_model']})" if "registered_model" in tags else "")
    return result


def _end_run(worker: WorkerConfig, status: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(worker.mlflow_tracking_uri).set_terminated(worker.mlflow_run_id, status)


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


def use_gpus(config: TrainConfig, cluster_gpus: float) -> bool:
    """``config.use_gpu``, or for None (the default) whether the cluster has a GPU per worker now;
    a GPU cluster that a job leaves idle is said, not done silently (a 1.4 B model on CPUs)."""
    if config.use_gpu is None:
        if cluster_gpus >= config.num_workers:
            logger.info("the cluster has %g GPUs: training on %d of them (--no-use-gpu trains on CPUs)", cluster_gpus,
                        config.num_workers)
            return True
        if cluster_gpus > 0:
            logger.warning("the cluster has %g GPUs, fewer than the %d workers: training on CPUs (lower --num-workers "
                           "to %d, or give --use-gpu to wait for more)", cluster_gpus, config.num_workers,
                           int(cluster_gpus))
        return False
    if not config.use_gpu and cluster_gpus > 0:
        logger.warning("--no-use-gpu: training on CPUs while the cluster has %g GPUs", cluster_gpus)
    return config.use_gpu


def placed(config: TrainConfig, num_datasets: int) -> TrainConfig:
    """``config`` with ``cpus_per_worker`` and ``max_decoders`` resolved against the Ray cluster
    (``worker_cpus``, ``default_decoders``); raises when the cluster cannot place the job."""
    cluster = ray.cluster_resources()
    config = dataclasses.replace(config, use_gpu=use_gpus(config, cluster.get("GPU", 0.0)))
    cpus = worker_cpus(config, cluster, num_datasets)
    decoders = config.max_decoders or default_decoders(cluster.get("CPU", 0.0), cpus * config.num_workers)
    logger.info("%d worker(s) with %g CPUs each; up to %d decode actor(s) per dataset", config.num_workers, cpus,
                decoders)
    return dataclasses.replace(config, cpus_per_worker=cpus, max_decoders=decoders)


def run_trainer(train_loop: Callable[[dict], None], config: TrainConfig, datasets: Callable[[], dict[str, Any]],
                variant: str, job: Any = None) -> ray.train.Result:
    """Build and fit the ``TorchTrainer`` for ``config`` (resolved by ``placed``); every worker runs
    ``train_loop`` with ``{"worker": WorkerConfig(...)}`` (``job``: the trainer's own settings, also
    logged as the run's parameters). ``datasets`` builds Ray Data's datasets, only when there is
    training to do (``--materialize-data`` decodes them all at once). Returns Ray Train's result.
    Relative paths are made absolute first: the workers run in their run's folder, not this one."""
    config, job = absolute_locations(config), absolute_locations(job)
    params = {**dataclasses.asdict(config), "variant": variant,
              **(dataclasses.asdict(job) if dataclasses.is_dataclass(job) else {})}
    worker = WorkerConfig(train=config, variant=variant, mlflow_run_id=mlflow_run_id(config, params),
                          mlflow_tracking_uri=tracking_uri(config.mlflow_uri), job=job)
    try:
        result = already_published(config, worker.mlflow_run_id)
        if result is None:
            result = TorchTrainer(
                train_loop,
                train_loop_config={"worker": worker},
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
                datasets=datasets(),
            ).fit()
    except BaseException as error:  # the run ends FAILED (KILLED on an interrupt), also before any fit
        _end_run(worker, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    _end_run(worker, "FAILED" if result.error else "FINISHED")
    return result


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
