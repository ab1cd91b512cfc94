"""MLflow for every job: one place that decides the tracking store and opens runs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sys
import time
import warnings
from typing import Any, Iterator

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(flag: str | None = None) -> str:
    """The tracking store: the flag, else ``MLFLOW_TRACKING_URI``, else a local SQLite file."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@contextlib.contextmanager
def mlflow_run(experiment: str, run_name: str | None, uri: str | None, params: dict[str, Any]) -> Iterator[Any]:
    """Start an MLflow run with ``params`` logged; yields the ``mlflow`` module for logging."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params({key: _param(value) for key, value in params.items()})
        yield mlflow


class TrackingError(RuntimeError):
    """The MLflow tracking store could not be opened or written."""


class BackgroundRun:
    """An MLflow run opened on a helper thread, for jobs whose start-up is worth overlapping.

    Importing MLflow and opening its store take about 2 s on a small machine; the render job
    spends the same time starting Ray Data's actors, so the two run side by side. The run gets
    the same system tags (user, source, git commit) as ``mlflow.start_run`` gives. Logging calls
    wait for the run to be open. If opening fails, the error is logged at once and raised by the
    first logging call (and by ``end``), so the job's own results, already written, are kept.
    Uses ``MlflowClient`` only: MLflow's fluent active run belongs to the thread that started it.
    """

    def __init__(self, experiment: str, run_name: str | None, uri: str | None, params: dict[str, Any]) -> None:
        self.uri = tracking_uri(uri)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlflow-open")
        self._opened = self._executor.submit(self._open_and_report, experiment, run_name, dict(params))
        self._executor.shutdown(wait=False)

    def _open_and_report(self, experiment: str, run_name: str | None, params: dict[str, Any]) -> tuple[Any, str]:
        try:
            return self._open(experiment, run_name, params)
        except Exception as error:
            logger.error("MLflow tracking store %s could not be opened: %s (the job goes on; it fails at its end)",
                         self.uri, error)
            raise

    def _open(self, experiment: str, run_name: str | None, params: dict[str, Any]) -> tuple[Any, str]:
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        client = MlflowClient(self.uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(experiment)
            except MlflowException as error:  # another job created it meanwhile
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        run = client.create_run(experiment_id, tags=resolve_tags({MLFLOW_RUN_NAME: run_name} if run_name else {}),
                                run_name=run_name)
        client.log_batch(run.info.run_id, params=[Param(key, _param(value)) for key, value in params.items()])
        return client, run.info.run_id

    def _run(self) -> tuple[Any, str]:
        try:
            return self._opened.result()
        except Exception as error:
            raise TrackingError(f"MLflow tracking store {self.uri} could not be opened: {error}") from error

    @property
    def run_id(self) -> str:
        return self._run()[1]

    def log_metrics(self, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        client, run_id = self._run()
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])

    def set_tag(self, key: str, value: Any) -> None:
        client, run_id = self._run()
        client.set_tag(run_id, key, str(value))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED (or FAILED, KILLED); raises ``TrackingError`` if it never opened."""
        client, run_id = self._run()
        client.set_terminated(run_id, status)


@contextlib.contextmanager
def mlflow_run_in_background(experiment: str, run_name: str | None, uri: str | None,
                             params: dict[str, Any]) -> Iterator[BackgroundRun]:
    """Like ``mlflow_run``, with the run opened while the block starts working; yields the
    ``BackgroundRun``. The run ends FINISHED, or FAILED if the block raises (that error wins)."""
    run = BackgroundRun(experiment, run_name, uri, params)
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):
            run.end("KILLED" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "FAILED")
        raise
    run.end("FINISHED")


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_shards_input(data: str, context: str) -> None:
    """Record the orbit shards a run reads as an MLflow dataset input of the active run: one row per
    shard file (path, bytes, modification time), so the run says exactly which files it used."""
    import fsspec
    import mlflow
    import pandas as pd

    from pipeline.data import shards

    paths = shards.list_shards(data)
    filesystem, _ = fsspec.core.url_to_fs(data)
    listing = []
    for path in paths:
        info = filesystem.info(path)
        listing.append({"shard": path, "bytes": int(info.get("size") or 0),
                        "modified": str(info.get("mtime") or info.get("LastModified") or info.get("created") or "")})
    frame = pd.DataFrame(listing, columns=["shard", "bytes", "modified"])
    with warnings.catch_warnings():  # MLflow's hints on source types and integer columns, not ours to act on
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        dataset = mlflow.data.from_pandas(frame, source=data, name=data.rstrip("/").split("/")[-1] or data)
        mlflow.log_input(dataset, context=context)
